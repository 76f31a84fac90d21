//! Generated protobuf and gRPC code for `callbot.v1`, fenced into one module, plus the
//! encoded descriptor set that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("callbot.v1");

/// The encoded `FileDescriptorSet` of `proto/callbot/v1/callbot.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("callbot_descriptor");
