//! The method labels of every metric, read from the descriptor sets the server serves (so a new
//! RPC needs no edit here), and the gRPC code names go-grpc-prometheus dashboards expect.

use std::collections::HashMap;

use prometheus_client::encoding::EncodeLabelSet;
use prost::Message;

/// What kind of RPC a method is, as go-grpc-prometheus labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcType {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStream,
    /// A stream of requests, one response.
    ClientStream,
    /// Streams both ways.
    BidiStream,
}

impl RpcType {
    pub(super) fn label(self) -> &'static str {
        match self {
            RpcType::Unary => "unary",
            RpcType::ServerStream => "server_stream",
            RpcType::ClientStream => "client_stream",
            RpcType::BidiStream => "bidi_stream",
        }
    }
}

/// `grpc_type`, `grpc_service`, `grpc_method`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MethodLabels {
    pub(super) grpc_type: &'static str,
    pub(super) grpc_service: String,
    pub(super) grpc_method: String,
}

/// grpc-go's `codes.Code.String()`, the `grpc_code` values go-grpc-prometheus dashboards expect.
pub fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Every method the server registers, by HTTP/2 path, read from the descriptor sets it serves
/// (so a new RPC gets its right `grpc_type` without touching this file).
pub(super) fn known_methods() -> HashMap<String, MethodLabels> {
    let sets = [
        crate::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                let full = if package.is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{package}.{}", service.name())
                };
                for m in &service.method {
                    let kind = match (m.client_streaming(), m.server_streaming()) {
                        (false, false) => RpcType::Unary,
                        (false, true) => RpcType::ServerStream,
                        (true, false) => RpcType::ClientStream,
                        (true, true) => RpcType::BidiStream,
                    };
                    methods.insert(
                        format!("/{full}/{}", m.name()),
                        MethodLabels {
                            grpc_type: kind.label(),
                            grpc_service: full.clone(),
                            grpc_method: m.name().to_owned(),
                        },
                    );
                }
            }
        }
    }
    methods
}
