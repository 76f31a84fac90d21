//! The caller's deadline, measured once and applied everywhere: a call's upstream exchange ends
//! at the earlier of `--upstream-timeout` and the caller's `grpc-timeout` (less a little
//! headroom), both counted from the moment the call reached the facade.

use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

/// The part of a caller's deadline kept back so that our own DEADLINE_EXCEEDED answers before
/// tonic's deadline timer (which would answer CANCELLED) fires.
const HEADROOM_MAX: Duration = Duration::from_millis(100);

/// The caller's deadline (`grpc-timeout` from `arrival`, the moment tonic started its own timer)
/// less a little headroom, so that our own DEADLINE_EXCEEDED answers before tonic's timer would
/// answer CANCELLED; `None` without one. Read by the middleware, once per call.
pub fn caller(arrival: Instant, headers: &HeaderMap) -> Option<Instant> {
    static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    let timeout = headers.get(&GRPC_TIMEOUT).and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout)?;
    let headroom = (timeout / 10).min(HEADROOM_MAX);
    Some(arrival + timeout.saturating_sub(headroom))
}

/// The bound of a unary call's whole upstream exchange: `upstream_timeout` from arrival, cut by
/// the caller's deadline.
pub fn for_call(arrival: Instant, caller: Option<Instant>, upstream_timeout: Duration) -> Instant {
    let own = arrival + upstream_timeout;
    caller.map_or(own, |c| c.min(own))
}

/// The bound of one exchange inside a stream (a campaign chunk): `upstream_timeout` from now,
/// cut by the stream's deadline.
pub fn for_exchange(upstream_timeout: Duration, stream_deadline: Option<Instant>) -> Instant {
    let own = Instant::now() + upstream_timeout;
    stream_deadline.map_or(own, |d| d.min(own))
}

/// Parses the gRPC `grpc-timeout` header: up to 8 digits and a unit (H M S m u n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_table() {
        let rows = [
            ("1S", Some(Duration::from_secs(1))),
            ("250m", Some(Duration::from_millis(250))),
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5n", Some(Duration::from_nanos(5))),
            ("S", None),
            ("123456789S", None),
            ("1x", None),
            ("-1S", None),
            ("", None),
        ];
        for (v, want) in rows {
            assert_eq!(parse_grpc_timeout(v), want, "{v}");
        }
    }

    #[tokio::test]
    async fn the_earlier_deadline_wins() {
        let arrived = Instant::now();
        let mut headers = HeaderMap::new();
        let bound = |headers: &HeaderMap, upstream| for_call(arrived, caller(arrived, headers), upstream);
        assert_eq!(bound(&headers, Duration::from_secs(10)), arrived + Duration::from_secs(10));
        headers.insert("grpc-timeout", "2S".parse().unwrap());
        // 2 s less a tenth of it, at most 100 ms.
        assert_eq!(bound(&headers, Duration::from_secs(10)), arrived + Duration::from_millis(1900));
        assert_eq!(bound(&headers, Duration::from_secs(1)), arrived + Duration::from_secs(1));
        headers.insert("grpc-timeout", "500m".parse().unwrap());
        assert_eq!(caller(arrived, &headers), Some(arrived + Duration::from_millis(450)));
    }
}
