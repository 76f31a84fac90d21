//! tonic's own refusals of the caller's bytes (a message over `--max-message-bytes`, bytes that
//! are not a message of the method), rewritten as the facade's statuses: tonic answers those
//! before any handler runs and without our details, and the contract wants every failure to
//! carry them.
//!
//! tonic says which refusal it is only in `grpc-message`, so the wording below is matched as
//! tonic 0.14.5 (the version in Cargo.lock) writes it, together with prost 0.14.6's
//! `DecodeError` text, which `SliceDecoder` (src/codec.rs) passes on as tonic's own protobuf
//! decoder does. What fails when that wording changes:
//! - end to end, tests/api/fault_matrix.rs
//!   `junk_protobuf_bytes_are_refused_with_details_and_the_process_stays_up`,
//!   `a_frame_declaring_more_than_max_message_bytes_is_resource_exhausted` and
//!   `junk_after_a_good_campaign_spec_ends_the_stream_with_details`, and tests/api/server.rs
//!   `oversized_messages_are_resource_exhausted`.

use http::{HeaderMap, Response};
use tonic::body::Body;

use crate::status::{ErrorContext, FacadeError, to_status};

/// How tonic's decoder words its refusals of bytes that are not a message of the method (the
/// protobuf decode, a frame cut short, a bad compression flag): INTERNAL, as gRPC documents it.
const UNDECODABLE_PREFIXES: [&str; 3] =
    ["failed to decode Protobuf message", "Unexpected EOF decoding stream", "protocol error: received message with"];

/// The gRPC code carried in `headers` (trailers-only answer or trailers), if any.
pub(super) fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Replaces the inner service's answer when it is a trailers-only refusal by tonic (a unary
/// request that did not decode, say) by our status for it.
pub(super) fn rewrite_answer(res: &mut Response<Body>, request_id: &str) {
    if let Some(err) = tonic_refusal(res.headers()) {
        *res = refusal_status(&err, request_id).into_http::<Body>();
    }
}

/// Rewrites a status carried in `headers` (trailers-only answer or trailers) when it is one of
/// tonic's refusals of the caller's bytes.
pub(super) fn rewrite_refusal(headers: &mut HeaderMap, request_id: &str) {
    if let Some(err) = tonic_refusal(headers) {
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        let _ = refusal_status(&err, request_id).add_header(headers);
    }
}

/// Which of tonic's own refusals of the caller's bytes a status in `headers` (trailers-only
/// answer or trailers) is, if any: a message over the size limit, or bytes that do not decode.
/// A status with details is ours already (a handler's), never tonic's.
fn tonic_refusal(headers: &HeaderMap) -> Option<FacadeError> {
    let code = grpc_status(headers)?;
    // grpc-message is percent-encoded; of what is matched, only the spaces are encoded.
    let message = headers.get("grpc-message")?.to_str().ok()?.replace("%20", " ");
    if code == tonic::Code::OutOfRange as i32 && message.contains("message length too large") {
        Some(FacadeError::MessageTooLarge)
    } else if code == tonic::Code::Internal as i32
        && !headers.contains_key("grpc-status-details-bin")
        && UNDECODABLE_PREFIXES.iter().any(|p| message.starts_with(p))
    {
        Some(FacadeError::MalformedMessage)
    } else {
        None
    }
}

/// Our status for one of tonic's refusals: RESOURCE_EXHAUSTED for an oversized message (the
/// contract's code, where tonic says OUT_OF_RANGE), INTERNAL for undecodable bytes, with details.
fn refusal_status(err: &FacadeError, request_id: &str) -> tonic::Status {
    to_status(err, &ErrorContext { request_id, external_session_id: None })
}
