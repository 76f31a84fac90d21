//! `NewSession`: a validated `CreateSessionRequest` (work in progress).
