//! What the provider tells about the calls of a session (docs/upstream.md §11): the two bodies it
//! POSTs to a registered webhook (a live call state, and the end-of-call record, the CDR), and
//! `POST /api/v3/call-transaction/search`, the call history, whose items are CDRs too.
//!
//! Read tolerantly, like the envelope: unknown keys ignored, numbers given as strings accepted,
//! `null` as absent; a field of a wrong shape (an object where a number belongs) makes the whole
//! body "not a call event". `recording_file` is read only as "present or not": the URL downloads
//! without authentication, so it is never kept, logged or forwarded.

use http::Method;
use serde::{Deserialize, Deserializer, de};
use serde_json::json;

use super::{
    CallContext, UpstreamClient, UpstreamError,
    envelope::{Envelope, lenient_string, null_as_default},
    retry::Idempotency,
};

/// The search endpoint's path.
pub(super) const SEARCH_PATH: &str = "/api/v3/call-transaction/search";

/// Most items one search page returns (the provider refuses more).
pub const SEARCH_PAGE_SIZE: usize = 50;

/// A live call state, as POSTed to the webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LiveState {
    /// One call.
    #[serde(default, deserialize_with = "lenient_string")]
    pub call_uuid: String,
    /// `create`, `early`, `ringing`, `answered`, `hangup` (words seen; others are possible).
    #[serde(default, deserialize_with = "lenient_string")]
    pub state: String,
    /// `outbound` for the bot's calls.
    #[serde(default, deserialize_with = "lenient_string")]
    pub direction: String,
    /// The caller side.
    #[serde(default, deserialize_with = "lenient_string")]
    pub from_number: String,
    /// The called side (the contact, for outbound calls).
    #[serde(default, deserialize_with = "lenient_string")]
    pub to_number: String,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub created_time: Option<u64>,
}

/// An end-of-call record: as POSTed to the webhook, and as the call history lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CallRecord {
    /// The call (the live states' `call_uuid`).
    #[serde(default, deserialize_with = "lenient_string")]
    pub transaction_id: String,
    /// The session (`autocall_id`); may be missing from a push.
    #[serde(default, deserialize_with = "lenient_string")]
    pub autocall_id: String,
    /// `outbound` for the bot's calls.
    #[serde(default, deserialize_with = "lenient_string")]
    pub direction: String,
    /// The caller side.
    #[serde(default, deserialize_with = "lenient_string")]
    pub source_number: String,
    /// The called side.
    #[serde(default, deserialize_with = "lenient_string")]
    pub destination_number: String,
    /// `answered`, `cancelled`, `busy`, `no answer`, `failed`, ...
    #[serde(default, deserialize_with = "lenient_string")]
    pub disposition: String,
    /// `NORMAL_CLEARING`, `USER_BUSY`, ... (not documented for the push).
    #[serde(default, deserialize_with = "lenient_string")]
    pub hangup_cause: String,
    /// Talk seconds.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub bill_sec: Option<u64>,
    /// Whole call seconds.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub duration: Option<u64>,
    /// Seconds until the answer.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub time_start_to_answer: Option<u64>,
    /// Recorded seconds.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub record_seconds: Option<u64>,
    /// Whether a recording URL was given (the URL itself is dropped while parsing).
    #[serde(default, rename = "recording_file", deserialize_with = "present")]
    pub has_recording_file: bool,
    /// Unix milliseconds.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub created_date: Option<u64>,
    /// Unix milliseconds.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub last_updated_date: Option<u64>,
}

/// One webhook delivery, told apart by its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A live call state.
    Live(LiveState),
    /// An end-of-call record.
    Record(CallRecord),
}

/// Why a webhook body is not a call event (the receiver answers 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotACallEvent(pub String);

/// Longest call or session id accepted (`call_uuid`, `transaction_id`, `autocall_id`).
pub const MAX_ID_CHARS: usize = 128;
/// Longest phone number field accepted.
pub const MAX_PHONE_CHARS: usize = 32;
/// Longest word accepted (`state`, `direction`, `disposition`, `hangup_cause`).
pub const MAX_WORD_CHARS: usize = 64;

/// `value` is at most `max` characters, all printable (no control characters, so it can split no
/// log line and steer no terminal); otherwise why not, naming `field`.
fn bounded(field: &str, value: &str, max: usize) -> Result<(), NotACallEvent> {
    if value.chars().count() > max {
        return Err(NotACallEvent(format!("{field} is longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(NotACallEvent(format!("{field} holds control characters")));
    }
    Ok(())
}

impl LiveState {
    /// Every text field within its bound (API.md: ids 128, phones 32, words 64, printable).
    pub fn check_bounds(&self) -> Result<(), NotACallEvent> {
        bounded("call_uuid", &self.call_uuid, MAX_ID_CHARS)?;
        bounded("state", &self.state, MAX_WORD_CHARS)?;
        bounded("direction", &self.direction, MAX_WORD_CHARS)?;
        bounded("from_number", &self.from_number, MAX_PHONE_CHARS)?;
        bounded("to_number", &self.to_number, MAX_PHONE_CHARS)
    }
}

impl CallRecord {
    /// Every text field within its bound (API.md: ids 128, phones 32, words 64, printable).
    pub fn check_bounds(&self) -> Result<(), NotACallEvent> {
        bounded("transaction_id", &self.transaction_id, MAX_ID_CHARS)?;
        bounded("autocall_id", &self.autocall_id, MAX_ID_CHARS)?;
        bounded("direction", &self.direction, MAX_WORD_CHARS)?;
        bounded("source_number", &self.source_number, MAX_PHONE_CHARS)?;
        bounded("destination_number", &self.destination_number, MAX_PHONE_CHARS)?;
        bounded("disposition", &self.disposition, MAX_WORD_CHARS)?;
        bounded("hangup_cause", &self.hangup_cause, MAX_WORD_CHARS)
    }
}

/// Parses one webhook body: a JSON object with `transaction_id` (a CDR) or `call_uuid` and
/// `state` (a live state). Never panics, whatever the bytes.
pub fn parse_delivery(body: &[u8]) -> Result<Delivery, NotACallEvent> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| NotACallEvent(format!("not JSON ({})", e.classify_word())))?;
    let Some(object) = value.as_object() else {
        return Err(NotACallEvent("not a JSON object".into()));
    };
    let wrong = |e: serde_json::Error| NotACallEvent(format!("a field has the wrong type ({e})"));
    if object.get("transaction_id").is_some_and(|v| !v.is_null()) {
        let record = CallRecord::deserialize(&value).map_err(wrong)?;
        if record.transaction_id.trim().is_empty() {
            return Err(NotACallEvent("empty transaction_id".into()));
        }
        record.check_bounds()?;
        return Ok(Delivery::Record(record));
    }
    if object.get("call_uuid").is_some_and(|v| !v.is_null()) {
        let live = LiveState::deserialize(&value).map_err(wrong)?;
        if live.call_uuid.trim().is_empty() || live.state.trim().is_empty() {
            return Err(NotACallEvent("a live state needs call_uuid and state".into()));
        }
        live.check_bounds()?;
        return Ok(Delivery::Live(live));
    }
    Err(NotACallEvent("neither a live call state (call_uuid) nor an end-of-call record (transaction_id)".into()))
}

trait ClassifyWord {
    fn classify_word(&self) -> &'static str;
}

impl ClassifyWord for serde_json::Error {
    fn classify_word(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong types",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// A non-negative number, or a string holding one; null/missing/"" -> None; a fraction is
/// rounded down; anything else (negative, object, array, bool, junk text) is an error.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let bad = || de::Error::custom("expected a non-negative number");
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Err(bad()),
        },
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

/// True for a non-empty string (or any non-null value); the value itself is dropped.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(s)) => !s.trim().is_empty(),
        Some(_) => true,
    })
}

/// One page of the call history.
#[derive(Debug, Default, Deserialize)]
struct SearchPage {
    #[serde(default, deserialize_with = "null_as_default")]
    items: Vec<CallRecord>,
    /// The paging block (`has_next`, or `hasNext` in newer answers); read tolerantly.
    #[serde(default)]
    paging: Option<serde_json::Value>,
}

/// What a history search asks for (docs/upstream.md §11.3): calls created within
/// `from_ms..=to_ms` (Unix ms), to any of `phone_numbers` and/or with any of `transaction_ids`
/// (an empty list filters nothing), oldest first when `ascending`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Calls with these ids.
    pub transaction_ids: Vec<String>,
    /// Calls to these numbers (the provider compares national forms).
    pub phone_numbers: Vec<String>,
    /// Created at or after.
    pub from_ms: u64,
    /// Created at or before.
    pub to_ms: u64,
    /// Oldest first (reconciliation stores a contact's calls in the order they were placed).
    pub ascending: bool,
}

/// One page of a history search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// The calls of the page (items over their bounds left out).
    pub items: Vec<CallRecord>,
    /// Whether a next page exists.
    pub has_next: bool,
}

/// Whether a paging block says a page follows: `has_next`/`hasNext`, else page < total pages;
/// without a block, a full page may have a next.
fn has_next(paging: Option<&serde_json::Value>, page: u32, items: usize) -> bool {
    let Some(p) = paging.and_then(serde_json::Value::as_object) else {
        return items >= SEARCH_PAGE_SIZE;
    };
    if let Some(b) = p.get("has_next").or_else(|| p.get("hasNext")).and_then(serde_json::Value::as_bool) {
        return b;
    }
    match p.get("total_pages").or_else(|| p.get("totalPages")).and_then(serde_json::Value::as_u64) {
        Some(total) => u64::from(page) < total,
        None => items >= SEARCH_PAGE_SIZE,
    }
}

impl UpstreamClient {
    /// `POST /api/v3/call-transaction/search`: the end-of-call records of these calls (at most
    /// [`SEARCH_PAGE_SIZE`] ids, one page) made between `from_ms` and `to_ms`. A read: retried
    /// like the script list.
    pub async fn search_calls(
        &self,
        ctx: &CallContext,
        transaction_ids: &[String],
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<CallRecord>, UpstreamError> {
        let query =
            HistoryQuery { transaction_ids: transaction_ids.to_vec(), from_ms, to_ms, ..HistoryQuery::default() };
        Ok(self.search_history(ctx, &query, 1).await?.items)
    }

    /// Page `page` (from 1) of a history search, [`SEARCH_PAGE_SIZE`] items at most. A `429` is
    /// `UpstreamError::Http` with its `Retry-After` (not retried here: the caller's budget waits).
    pub async fn search_history(
        &self,
        ctx: &CallContext,
        query: &HistoryQuery,
        page: u32,
    ) -> Result<HistoryPage, UpstreamError> {
        let mut filter = serde_json::Map::new();
        filter.insert("fromDate".into(), query.from_ms.into());
        filter.insert("toDate".into(), query.to_ms.into());
        if !query.transaction_ids.is_empty() {
            filter.insert("transactionIds".into(), json!(query.transaction_ids));
        }
        if !query.phone_numbers.is_empty() {
            filter.insert("phoneNumbers".into(), json!(query.phone_numbers));
        }
        let body = json!({"filter": filter, "sort": {"field": "created_date", "isAsc": query.ascending}});
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let (page_text, size) = (page.max(1).to_string(), SEARCH_PAGE_SIZE.to_string());
        let answer = self
            .call_with_token(ctx, Idempotency::Read, Method::POST, &self.endpoints.search, |request| {
                request
                    .query(&[("page", page_text.as_str()), ("size", size.as_str())])
                    .header(&http::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        match self.decode::<SearchPage>(&answer)? {
            Envelope::Success(found) => {
                let has_next = has_next(found.paging.as_ref(), page.max(1), found.items.len());
                // Items whose fields are over their bounds are the provider's junk: left out, as
                // a webhook body with them would be refused.
                let items = found.items.into_iter().filter(|i| i.check_bounds().is_ok()).collect();
                Ok(HistoryPage { items, has_next })
            }
            Envelope::Failure { code } => Err(UpstreamError::Rejected { code, http_status: answer.status.as_u16() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paging_block_says_whether_a_page_follows() {
        for (paging, page, items, want) in [
            (Some(json!({"has_next": true})), 1, 3, true),
            (Some(json!({"hasNext": false, "total_pages": 9})), 1, 50, false),
            (Some(json!({"page_number": 2, "total_pages": 3})), 2, 50, true),
            (Some(json!({"totalPages": 2})), 2, 50, false),
            (Some(json!({})), 1, 50, true),
            (None, 1, 49, false),
            (None, 1, 50, true),
        ] {
            assert_eq!(has_next(paging.as_ref(), page, items), want, "{paging:?} {page} {items}");
        }
    }

    #[test]
    fn live_states_and_records_are_told_apart_and_read_tolerantly() {
        let live = br#"{"call_uuid":"c1","state":"ringing","direction":"outbound","from_number":"1900",
            "to_number":"84912345678","hotline":"1900","created_time":"1764590000","date_time":"x","extra":{"a":1}}"#;
        let Ok(Delivery::Live(l)) = parse_delivery(live) else { panic!("live") };
        assert_eq!((l.call_uuid.as_str(), l.state.as_str(), l.created_time), ("c1", "ringing", Some(1_764_590_000)));
        assert_eq!(l.to_number, "84912345678");
        let cdr = br#"{"transaction_id":"c1","autocall_id":null,"disposition":"no answer","bill_sec":"0",
            "duration":30.0,"recording_file":"https://x/y.mp3","last_updated_date":1764590000123,"user":[]}"#;
        let Ok(Delivery::Record(r)) = parse_delivery(cdr) else { panic!("cdr") };
        assert_eq!(r.autocall_id, "");
        assert_eq!((r.bill_sec, r.duration, r.last_updated_date), (Some(0), Some(30), Some(1_764_590_000_123)));
        assert!(r.has_recording_file);
        assert!(!format!("{r:?}").contains("y.mp3"), "the recording URL is not kept");
    }

    #[test]
    fn junk_is_not_a_call_event() {
        for body in [
            &b""[..],
            b"null",
            b"[1]",
            b"{}",
            b"{\"call_uuid\":\"c\"}",
            b"{\"transaction_id\":\"\"}",
            b"{\"transaction_id\":\"c\",\"bill_sec\":{\"x\":1}}",
            b"{\"transaction_id\":\"c\",\"bill_sec\":-3}",
            b"{\"transaction_id\":\"c\",\"bill_sec\":\"ten\"}",
            b"{\"call_uuid\":\"c\",\"state\":[\"ringing\"]}",
            b"\xff\xfe",
            b"{\"transaction_id\":\"c\"",
        ] {
            assert!(parse_delivery(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn every_text_field_is_bounded_and_printable() {
        let id = "c".repeat(MAX_ID_CHARS);
        let record = |field: &str, value: &str| {
            let mut v = serde_json::json!({"transaction_id": "t-1", "autocall_id": "s-1", "disposition": "answered",
                "destination_number": "84912345670", "hangup_cause": "NORMAL_CLEARING"});
            v[field] = serde_json::json!(value);
            parse_delivery(v.to_string().as_bytes())
        };
        let live = |field: &str, value: &str| {
            let mut v = serde_json::json!({"call_uuid": "c-1", "state": "ringing", "to_number": "0912345670"});
            v[field] = serde_json::json!(value);
            parse_delivery(v.to_string().as_bytes())
        };
        assert!(record("transaction_id", &id).is_ok() && live("call_uuid", &id).is_ok(), "at the bound");
        let over = |max: usize| "9".repeat(max + 1);
        for (field, max) in [
            ("transaction_id", MAX_ID_CHARS),
            ("autocall_id", MAX_ID_CHARS),
            ("destination_number", MAX_PHONE_CHARS),
            ("source_number", MAX_PHONE_CHARS),
            ("disposition", MAX_WORD_CHARS),
            ("hangup_cause", MAX_WORD_CHARS),
            ("direction", MAX_WORD_CHARS),
        ] {
            let err = record(field, &over(max)).unwrap_err();
            assert_eq!(err.0, format!("{field} is longer than {max} characters"));
        }
        for (field, max) in [("call_uuid", MAX_ID_CHARS), ("state", MAX_WORD_CHARS), ("to_number", MAX_PHONE_CHARS)] {
            assert!(live(field, &over(max)).is_err(), "{field}");
        }
        // Multi-byte characters count as characters, not bytes.
        assert!(record("disposition", &"đ".repeat(MAX_WORD_CHARS)).is_ok());
        for forged in ["t-1\nINFO forged line", "\u{1b}]0;title\u{7}", "a\rb"] {
            assert_eq!(record("transaction_id", forged).unwrap_err().0, "transaction_id holds control characters");
        }
    }
}
