//! tonic's own refusals of the caller's bytes (a message over `--max-message-bytes`, bytes that
//! are not a message of the method), rewritten as the facade's statuses: tonic answers those
//! before any handler runs and without our details, and the contract wants every failure to
//! carry them.
//!
//! tonic says which refusal it is only in `grpc-message`, so the wording below is matched as
//! tonic 0.14.5 (the version in Cargo.lock) writes it, together with prost 0.14.6's
//! `DecodeError` text, which `SliceDecoder` (src/codec.rs) passes on as tonic's own protobuf
//! decoder does. What fails when that wording changes:
//! - `tests::tonic_s_refusals_are_recognized` below, which makes tonic's decoder refuse each
//!   kind of bytes, for a unary method (trailers-only answer) and a streaming one (trailers);
//! - end to end, tests/api/fault_matrix.rs
//!   `junk_protobuf_bytes_are_refused_with_details_and_the_process_stays_up`,
//!   `a_frame_declaring_more_than_max_message_bytes_is_resource_exhausted` and
//!   `junk_after_a_good_campaign_spec_ends_the_stream_with_details`, and tests/api/server.rs
//!   `oversized_messages_are_resource_exhausted`.

use http::{HeaderMap, HeaderName, Response};
use tonic::body::Body;

use crate::status::{ErrorContext, FacadeError, to_status};

/// How tonic's decoder words its refusals of bytes that are not a message of the method (the
/// protobuf decode, a frame cut short, a bad compression flag): INTERNAL, as gRPC documents it.
const UNDECODABLE_PREFIXES: [&str; 3] =
    ["failed to decode Protobuf message", "Unexpected EOF decoding stream", "protocol error: received message with"];

/// Header names looked up on every call: as constants, not parsed from text at each look-up.
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
static GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");

/// The gRPC code carried in `headers` (trailers-only answer or trailers), if any.
pub(super) fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get(&GRPC_STATUS)?.to_str().ok()?.parse().ok()
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
        headers.remove(&GRPC_MESSAGE);
        headers.remove(&GRPC_STATUS_DETAILS);
        let _ = refusal_status(&err, request_id).add_header(headers);
    }
}

/// Which of tonic's own refusals of the caller's bytes a status in `headers` (trailers-only
/// answer or trailers) is, if any: a message over the size limit, or bytes that do not decode.
/// A status with details is ours already (a handler's), never tonic's.
fn tonic_refusal(headers: &HeaderMap) -> Option<FacadeError> {
    let code = grpc_status(headers)?;
    // grpc-message is percent-encoded; of what is matched, only the spaces are encoded.
    let message = headers.get(&GRPC_MESSAGE)?.to_str().ok()?.replace("%20", " ");
    if code == tonic::Code::OutOfRange as i32 && message.contains("message length too large") {
        Some(FacadeError::MessageTooLarge)
    } else if code == tonic::Code::Internal as i32
        && !headers.contains_key(&GRPC_STATUS_DETAILS)
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

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes, BytesMut};
    use http_body_util::{BodyExt, Full};
    use tonic::{Status, codec::Streaming, server::Grpc};

    use super::*;
    use crate::{codec::SliceCodec, pb::GetScriptRequest as Msg};

    /// The decoding limit of the servers below (`--max-message-bytes`).
    const LIMIT: usize = 64;

    /// A gRPC frame: `flag`, then `declared` as the length, then `payload`.
    fn frame(flag: u8, declared: u32, payload: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(5 + payload.len());
        b.put_u8(flag);
        b.put_u32(declared);
        b.put_slice(payload);
        b.freeze()
    }

    fn server() -> Grpc<SliceCodec<Msg, Msg>> {
        Grpc::new(SliceCodec::default()).max_decoding_message_size(LIMIT)
    }

    fn request(body: Bytes) -> http::Request<Full<Bytes>> {
        http::Request::builder()
            .method("POST")
            .uri("/callbot.v1.CallBotService/GetScript")
            .header("content-type", "application/grpc")
            .body(Full::new(body))
            .unwrap()
    }

    /// How tonic's server answers `body` for a unary method (trailers-only when it refused the
    /// bytes).
    async fn unary_answer(body: Bytes) -> Response<Body> {
        let echo = tower::service_fn(|req: tonic::Request<Msg>| async move {
            Ok::<_, Status>(tonic::Response::new(req.into_inner()))
        });
        server().unary(echo, request(body)).await
    }

    /// How tonic's server answers `body` for a streaming method whose handler passes on what
    /// the request stream yields: the trailers of its answer (the headers went out first).
    async fn streaming_trailers(body: Bytes) -> HeaderMap {
        let echo = tower::service_fn(|req: tonic::Request<Streaming<Msg>>| async move {
            Ok::<_, Status>(tonic::Response::new(req.into_inner()))
        });
        let res = server().streaming(echo, request(body)).await;
        assert!(res.headers().get("grpc-status").is_none(), "not trailers-only: {res:?}");
        // Up to the trailers only: hyper stops there, and tonic's body does not end after them.
        let mut body = res.into_body();
        loop {
            let frame = body.frame().await.expect("a frame before the end").expect("no body error");
            if let Ok(trailers) = frame.into_trailers() {
                return trailers;
            }
        }
    }

    /// `status` is the facade's for `want`: its code, with details.
    fn assert_ours(status: &Status, want: &FacadeError, what: &str) {
        assert_eq!(status.code(), refusal_status(want, "req-1").code(), "{what}: {status:?}");
        assert!(!status.details().is_empty(), "{what}: {status:?}");
    }

    #[tokio::test]
    async fn tonic_s_refusals_are_recognized() {
        use FacadeError::{MalformedMessage, MessageTooLarge};
        let cases = [
            ("a declared length over the limit", frame(0, 1024, b"\x0a\x01x"), MessageTooLarge),
            ("a truncated varint", frame(0, 4, b"\xff\xff\xff\xff"), MalformedMessage),
            ("a frame cut short", frame(0, 40, b"\x0a\x01x"), MalformedMessage),
            ("the compressed flag without grpc-encoding", frame(1, 3, b"\x0a\x01x"), MalformedMessage),
            ("an invalid compression flag", frame(2, 3, b"\x0a\x01x"), MalformedMessage),
        ];
        let recognized = |headers: &HeaderMap| tonic_refusal(headers).map(|e| e.to_string());
        for (what, body, want) in cases {
            let mut answer = unary_answer(body.clone()).await;
            let tonic_says = Status::from_header_map(answer.headers());
            assert_eq!(
                recognized(answer.headers()),
                Some(want.to_string()),
                "unary, {what}: tonic said {tonic_says:?}"
            );
            rewrite_answer(&mut answer, "req-1");
            assert_ours(
                &Status::from_header_map(answer.headers()).expect("a status"),
                &want,
                &format!("unary, {what}"),
            );
            assert_eq!(recognized(answer.headers()), None, "unary, {what}: ours is never taken for tonic's");

            let mut trailers = streaming_trailers(body).await;
            let tonic_says = Status::from_header_map(&trailers);
            assert_eq!(recognized(&trailers), Some(want.to_string()), "streaming, {what}: tonic said {tonic_says:?}");
            rewrite_refusal(&mut trailers, "req-1");
            assert_ours(&Status::from_header_map(&trailers).expect("a status"), &want, &format!("streaming, {what}"));
            assert_eq!(recognized(&trailers), None, "streaming, {what}: ours is never taken for tonic's");
        }
    }

    #[tokio::test]
    async fn good_messages_and_our_own_statuses_are_left_alone() {
        let good = frame(0, 3, b"\x0a\x01x");
        let mut answer = unary_answer(good.clone()).await;
        assert!(tonic_refusal(answer.headers()).is_none());
        rewrite_answer(&mut answer, "req-1");
        assert!(answer.headers().get("grpc-status").is_none(), "a good answer is left alone: {answer:?}");
        let trailers = streaming_trailers(good).await;
        assert_eq!(grpc_status(&trailers), Some(0));
        assert!(tonic_refusal(&trailers).is_none());
        for err in [FacadeError::MessageTooLarge, FacadeError::MalformedMessage] {
            let ours = refusal_status(&err, "req-1").into_http::<Body>();
            assert!(tonic_refusal(ours.headers()).is_none(), "{err:?}");
        }
    }
}
