//! callbot-facade: a gRPC facade in front of the callBot REST API.
pub mod pb;
pub mod simulator;
