//! callbot-facade: a gRPC facade in front of the callBot REST API.
pub mod domain;
pub mod pb;
