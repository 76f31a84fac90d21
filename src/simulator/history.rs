//! Call history: `POST /api/v3/call-transaction/search?page=1&size=50`, over the calls the simulator placed.
//!
//! Same headers and envelope as the callBot paths. Body (every part optional; an empty body = no filter):
//!
//! ```json
//! {"filter": {"fromDate": 1700000000000, "toDate": 1700000600000, "transactionIds": ["<call_uuid>"],
//!             "phoneNumbers": ["0912345678"], "isAnswer": true},
//!  "sort": {"field": "created_date", "isAsc": false}}
//! ```
//!
//! Only the *ended* calls of the caller's API key are searched. `fromDate` / `toDate` bound `created_date`
//! (inclusive, Unix ms); `transactionIds` keeps those calls; `phoneNumbers` compares in national form
//! (`+84…` ≡ `84…` ≡ `0…`) against the number dialled; `isAnswer` keeps answered (true) or unanswered (false)
//! calls. Sorted by `created_date`, newest first unless `isAsc` (ties in placement order). The 30-day bound of
//! the real API is not enforced. Answer:
//!
//! ```json
//! {"items": [<CDR, see calls.rs, always with autocall_id and autocall_uuid>],
//!  "paging": {"page_number": 1, "page_size": 50, "total_items": 3, "total_pages": 1, "has_next": false}}
//! ```
//!
//! Business errors (HTTP 200, -9999): `page` not an integer ≥ 1 → `page_invalid`; `size` not within 1..=50
//! → `size_invalid` (defaults: page 1, size 50); a body that is not JSON → `request_body_required`; a filter
//! field of the wrong type → `filter_invalid`; a sort field other than `created_date` → `sort_invalid`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::MAX_BODY_BYTES;
use super::api::{check_auth, fail, ok, query_param};
use super::calls::{CallRecord, Outcome, national};
use super::state::{Sim, key_id};

/// Largest page size.
const MAX_PAGE_SIZE: u64 = 50;

/// The parsed filter.
#[derive(Default)]
struct Filter {
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    ids: Option<HashSet<String>>,
    phones: Option<HashSet<String>>,
    is_answer: Option<bool>,
}

impl Filter {
    fn parse(v: Option<&Value>) -> Result<Self, ()> {
        let obj = match v {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(()),
        };
        let ms = |name: &str| match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(()),
        };
        let strings = |name: &str, norm: fn(&str) -> String| match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(norm(s)),
                    Value::Number(n) => Ok(norm(&n.to_string())),
                    _ => Err(()),
                })
                .collect::<Result<HashSet<_>, _>>()
                .map(Some),
            Some(_) => Err(()),
        };
        let is_answer = match obj.get("isAnswer") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(()),
        };
        Ok(Self {
            from_ms: ms("fromDate")?,
            to_ms: ms("toDate")?,
            ids: strings("transactionIds", |s| s.trim().to_owned())?,
            phones: strings("phoneNumbers", national)?,
            is_answer,
        })
    }

    fn keeps(&self, c: &CallRecord) -> bool {
        self.from_ms.is_none_or(|f| c.started_at_ms >= f)
            && self.to_ms.is_none_or(|t| c.started_at_ms <= t)
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&c.call_id))
            && self.phones.as_ref().is_none_or(|p| p.contains(&national(&c.phone)))
            && self.is_answer.is_none_or(|a| a == (c.row.outcome == Outcome::Answered))
    }
}

/// Whether the sort is ascending; `Err` for a field other than `created_date`.
fn sort_ascending(v: Option<&Value>) -> Result<bool, ()> {
    let obj: &Map<String, Value> = match v {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(()),
    };
    match obj.get("field") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "created_date" || f == "createdDate" => {}
        Some(_) => return Err(()),
    }
    match obj.get("isAsc") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(()),
    }
}

/// A page query parameter: absent → `default`; else an integer within `range`.
fn page_param(query: Option<&str>, name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
    match query_param(query, name) {
        None => Some(default),
        Some(v) => v.trim().parse::<u64>().ok().filter(|n| range.contains(n)),
    }
}

/// `POST /api/v3/call-transaction/search?page=<n>&size=<n>`.
pub(crate) async fn search(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let key = match check_auth(&sim, &parts.headers) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let query = parts.uri.query();
    let Some(page) = page_param(query, "page", 1, 1..=u64::MAX) else {
        return fail("page_invalid", "page must be an integer >= 1");
    };
    let Some(size) = page_param(query, "size", MAX_PAGE_SIZE, 1..=MAX_PAGE_SIZE) else {
        return fail("size_invalid", "size must be within 1..=50");
    };
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.unwrap_or_default();
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return fail("request_body_required", "Request body is required"),
        }
    };
    let Ok(filter) = Filter::parse(value.get("filter")) else {
        return fail("filter_invalid", "Please check your input param");
    };
    let Ok(ascending) = sort_ascending(value.get("sort")) else {
        return fail("sort_invalid", "Please check your input param");
    };
    let mut calls = sim.calls.ended_of(&key_id(&key), |c| filter.keeps(c));
    // Stable: ties keep placement order.
    if ascending {
        calls.sort_by_key(|c| c.started_at_ms);
    } else {
        calls.sort_by_key(|c| std::cmp::Reverse(c.started_at_ms));
    }
    let total = calls.len() as u64;
    let total_pages = total.div_ceil(size);
    let skip = usize::try_from(page.saturating_sub(1).saturating_mul(size)).unwrap_or(usize::MAX);
    let items: Vec<Value> = calls.iter().skip(skip).take(size as usize).map(|c| c.cdr_json(true)).collect();
    ok(&json!({
        "items": items,
        "paging": {
            "page_number": page,
            "page_size": size,
            "total_items": total,
            "total_pages": total_pages,
            "has_next": page < total_pages,
        },
    }))
}
