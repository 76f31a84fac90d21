//! `callbot-facade sessions`: the tenant's recent sessions, newest first (`ListSessions`, paged
//! until `--limit`): a table SESSION, KEY, SCRIPT, NAME, PURPOSE, CREATED and START (local
//! time; "at once" when the session dials as soon as created), CONTACTS, the outcome counts,
//! REFUSED (contacts refused before dialling) and FINISHED, or JSON (with the refusals by reason).

use std::io::Write;

use comfy_table::{Table, TableComponent};
use serde_json::{Value, json};

use super::{CliError, clock, connect};
use crate::{config::SessionsArgs, domain::listing::MAX_PAGE_SIZE, pb};

/// Runs the command.
pub async fn run(args: SessionsArgs) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    let created_after = args.since.map(|since| {
        let at = std::time::SystemTime::now().checked_sub(since).unwrap_or(std::time::UNIX_EPOCH);
        prost_types::Timestamp::from(at)
    });
    let limit = args.limit as usize;
    let mut sessions = Vec::new();
    let mut page_token = String::new();
    while sessions.len() < limit {
        let page_size = i32::try_from((limit - sessions.len()).min(MAX_PAGE_SIZE)).unwrap_or(50);
        let page = client
            .list_sessions(pb::ListSessionsRequest {
                page_size,
                page_token: page_token.clone(),
                campaign_id: args.campaign_id.clone(),
                created_after,
            })
            .await
            .map_err(CliError::Rpc)?
            .into_inner();
        sessions.extend(page.sessions);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    sessions.truncate(limit);
    let mut out = std::io::stdout().lock();
    if args.json {
        let all: Vec<Value> = sessions.iter().map(summary_json).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&all).unwrap_or_default())?;
    } else {
        write_table(&mut out, &sessions)?;
    }
    Ok(())
}

/// One session as JSON: the proto's field names, the creation time as RFC 3339 UTC.
fn summary_json(s: &pb::SessionSummary) -> Value {
    let session = s.session.clone().unwrap_or_default();
    json!({
        "session_id": session.id,
        "external_session_id": session.external_session_id,
        "script_id": s.script_id,
        "name": s.name,
        "purpose": purpose_word(s),
        "created_at": s.created_at.as_ref().map(clock::rfc3339),
        "start_time": session.start_time.as_ref().map(clock::rfc3339),
        "contacts_total": s.contacts_total,
        "answered": s.answered,
        "no_answer": s.no_answer,
        "busy": s.busy,
        "rejected": s.rejected,
        "failed": s.failed,
        "in_progress": s.in_progress,
        "unknown": s.unknown,
        "reconciled": s.reconciled,
        "refused_contacts": s.refused_contacts,
        "finished": s.finished,
    })
}

/// The purpose in lower case ("unspecified" when not said).
fn purpose_word(s: &pb::SessionSummary) -> String {
    s.purpose().as_str_name().trim_start_matches("CALL_PURPOSE_").to_ascii_lowercase()
}

/// Borderless, two spaces between columns, as `report`; names made inert (they are the
/// caller's text).
fn write_table(out: &mut impl Write, sessions: &[pb::SessionSummary]) -> std::io::Result<()> {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    for component in TableComponent::iter() {
        table.remove_style(component);
    }
    table.set_header([
        "SESSION",
        "KEY",
        "SCRIPT",
        "NAME",
        "PURPOSE",
        "CREATED",
        "START",
        "CONTACTS",
        "ANSWERED",
        "NO ANSWER",
        "BUSY",
        "REJECTED",
        "FAILED",
        "IN PROGRESS",
        "UNKNOWN",
        "REFUSED",
        "FINISHED",
    ]);
    for s in sessions {
        let session = s.session.clone().unwrap_or_default();
        table.add_row([
            session.id,
            session.external_session_id,
            s.script_id.clone(),
            if s.name.is_empty() { "-".to_owned() } else { s.name.clone() },
            match s.purpose() {
                pb::CallPurpose::Unspecified => "-".to_owned(),
                _ => purpose_word(s),
            },
            s.created_at.as_ref().map_or_else(|| "-".to_owned(), |t| clock::date_time(t.seconds)),
            session.start_time.as_ref().map_or_else(|| "at once".to_owned(), |t| clock::date_time(t.seconds)),
            s.contacts_total.to_string(),
            s.answered.to_string(),
            s.no_answer.to_string(),
            s.busy.to_string(),
            s.rejected.to_string(),
            s.failed.to_string(),
            s.in_progress.to_string(),
            s.unknown.to_string(),
            s.refused_contacts.values().sum::<i64>().to_string(),
            if s.finished { "yes" } else { "no" }.to_owned(),
        ]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for line in table.lines() {
        writeln!(out, "{}", super::inert(line.trim_end()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json_carry_every_count() {
        let s = pb::SessionSummary {
            session: Some(pb::Session {
                id: "as-1".into(),
                script_id: "sc".into(),
                external_session_id: "camp-0".into(),
                rejected_contacts: vec![],
                start_time: Some(prost_types::Timestamp { seconds: 1_700_003_600, nanos: 0 }),
            }),
            script_id: "sc".into(),
            name: "Nhắc lịch hẹn".into(),
            created_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            contacts_total: 6,
            answered: 1,
            no_answer: 2,
            busy: 0,
            rejected: 1,
            failed: 0,
            in_progress: 2,
            finished: false,
            unknown: 1,
            reconciled: 2,
            purpose: pb::CallPurpose::Advertising as i32,
            refused_contacts: [("DO_NOT_CALL".to_owned(), 2), ("FREQUENCY_CAP".to_owned(), 1)].into(),
        };
        let mut out = Vec::new();
        write_table(&mut out, std::slice::from_ref(&s)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SESSION  KEY"), "{text}");
        let row: Vec<&str> = lines[1].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(row[..5], ["as-1", "camp-0", "sc", "Nhắc lịch hẹn", "advertising"]);
        assert_eq!(row[6], clock::date_time(1_700_003_600), "the start, local time");
        assert_eq!(row[7..], ["6", "1", "2", "0", "1", "0", "2", "1", "3", "no"]);
        let v = summary_json(&s);
        assert_eq!(v["session_id"], "as-1");
        assert_eq!(v["external_session_id"], "camp-0");
        assert_eq!(v["created_at"], "2023-11-14T22:13:20Z");
        assert_eq!(v["start_time"], "2023-11-14T23:13:20Z");
        assert_eq!(v["purpose"], "advertising");
        assert_eq!(v["refused_contacts"], json!({"DO_NOT_CALL": 2, "FREQUENCY_CAP": 1}));
        assert_eq!(v["in_progress"], 2);
        assert_eq!(v["finished"], false);
        assert_eq!((v["unknown"].as_i64(), v["reconciled"].as_i64()), (Some(1), Some(2)));
        // Not said, at once: a dash and the words, not empty cells.
        let plain = pb::SessionSummary {
            session: Some(pb::Session { id: "as-2".into(), external_session_id: "k".into(), ..Default::default() }),
            ..s.clone()
        };
        let plain =
            pb::SessionSummary { purpose: 0, name: String::new(), refused_contacts: Default::default(), ..plain };
        let mut out = Vec::new();
        write_table(&mut out, std::slice::from_ref(&plain)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let row: Vec<&str> =
            text.lines().nth(1).unwrap().split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!((row[3], row[4], row[6], row[15]), ("-", "-", "at once", "0"), "{text}");
        assert_eq!(summary_json(&plain)["start_time"], Value::Null);
    }
}
