//! `callbot-facade report`: one session's calls summed up (`GetSessionReport`): a summary line
//! and one table row per contact, or the whole report as JSON.

use std::io::Write;

use comfy_table::{Table, TableComponent};
use serde_json::{Value, json};

use super::{CliError, clock, connect, outcome_word, seconds_json, seconds_text, source_word, state_word};
use crate::{config::ReportArgs, domain::mask_phone, pb};

/// Runs the command.
pub async fn run(args: ReportArgs) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    let report = client
        .get_session_report(pb::GetSessionReportRequest { session_id: args.session.clone() })
        .await
        .map_err(|status| not_found_hint(&args.session, status))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report_json(&report)).unwrap_or_default())?;
    } else {
        writeln!(out, "{}", super::inert(&summary(&report)))?;
        write_table(&mut out, &report)?;
    }
    Ok(())
}

/// A session the facade does not know, with what to do when the id given is not a session id:
/// the facade knows sessions by the upstream's id (what `campaign` prints as `session ids`),
/// not by their external session id (a chunk key such as `csv-…-0`).
fn not_found_hint(session: &str, status: tonic::Status) -> CliError {
    let not_found = status.code() == tonic::Code::NotFound;
    let looks_like_key =
        session.rsplit_once('-').is_some_and(|(_, i)| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
    if not_found && looks_like_key {
        return CliError::Input(format!(
            "{}\n  {session:?} looks like a chunk key (external session id) this facade has no record of: --session \
             takes the session id that `campaign` printed (`session ids ...`, or `chunk N: KEY started as session \
             ID`), or the key of a chunk started through this facade while its webhook receiver was on",
            super::describe(&status)
        ));
    }
    CliError::Rpc(status)
}

/// `session S: N contacts, A answered, B no answer, C busy, D rejected, E failed, F in progress, U unknown;
/// reconciled: R; finished: yes|no`.
pub fn summary(r: &pb::GetSessionReportResponse) -> String {
    format!(
        "session {}: {} contacts, {} answered, {} no answer, {} busy, {} rejected, {} failed, {} in progress, {} unknown; \
         reconciled: {}; finished: {}",
        r.session_id,
        r.contacts_total,
        r.answered,
        r.no_answer,
        r.busy,
        r.rejected,
        r.failed,
        r.in_progress,
        r.unknown,
        r.reconciled,
        yes_no(r.finished)
    )
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The report as JSON: the proto's field names, words for states and outcomes, durations as
/// seconds, times as RFC 3339 UTC, phones as given (not masked).
fn report_json(r: &pb::GetSessionReportResponse) -> Value {
    json!({
        "session_id": r.session_id,
        "contacts_total": r.contacts_total,
        "answered": r.answered,
        "no_answer": r.no_answer,
        "busy": r.busy,
        "rejected": r.rejected,
        "failed": r.failed,
        "in_progress": r.in_progress,
        "finished": r.finished,
        "unknown": r.unknown,
        "reconciled": r.reconciled,
        "contacts": r.contacts.iter().map(|c| json!({
            "phone": c.phone,
            "state": state_word(c.state()),
            "outcome": outcome_word(c.outcome()),
            "attempts": c.attempts,
            "talk_duration": seconds_json(c.talk_duration.as_ref()),
            "last_event_at": c.last_event_at.as_ref().map(clock::rfc3339),
            "final": c.r#final,
            "source": source_word(c.source()),
        })).collect::<Vec<_>>(),
    })
}

/// PHONE (masked, as the caller gave it), STATE, OUTCOME, ATTEMPTS, TALK, LAST EVENT (local
/// time), FINAL, SOURCE (where the outcome came from: webhook, history, facade); `-` where
/// nothing is known yet. Borderless, two spaces between columns, as `scripts`.
fn write_table(out: &mut impl Write, r: &pb::GetSessionReportResponse) -> std::io::Result<()> {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    for component in TableComponent::iter() {
        table.remove_style(component);
    }
    table.set_header(["PHONE", "STATE", "OUTCOME", "ATTEMPTS", "TALK", "LAST EVENT", "FINAL", "SOURCE"]);
    let or_dash = |s: String| if s == "unspecified" { "-".to_owned() } else { s };
    for c in &r.contacts {
        table.add_row([
            mask_phone(&c.phone),
            or_dash(state_word(c.state())),
            or_dash(outcome_word(c.outcome())),
            c.attempts.to_string(),
            c.talk_duration.as_ref().map_or_else(|| "-".to_owned(), seconds_text),
            c.last_event_at.as_ref().map_or_else(|| "-".to_owned(), |t| clock::date_time(t.seconds)),
            yes_no(c.r#final).to_owned(),
            or_dash(source_word(c.source())),
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
    fn summary_and_table() {
        let report = pb::GetSessionReportResponse {
            session_id: "s1".into(),
            contacts_total: 2,
            answered: 1,
            in_progress: 1,
            contacts: vec![
                pb::ContactReport {
                    phone: "0912345670".into(),
                    state: pb::CallState::Ended.into(),
                    outcome: pb::CallOutcome::Answered.into(),
                    attempts: 1,
                    talk_duration: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
                    last_event_at: Some(prost_types::Timestamp { seconds: 0, nanos: 0 }),
                    r#final: true,
                    source: pb::CallEventSource::History.into(),
                },
                pb::ContactReport { phone: "0912345671".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        assert_eq!(
            summary(&report),
            "session s1: 2 contacts, 1 answered, 0 no answer, 0 busy, 0 rejected, 0 failed, 1 in progress, 0 unknown; \
             reconciled: 0; finished: no"
        );
        let mut out = Vec::new();
        write_table(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PHONE       STATE  OUTCOME   ATTEMPTS  TALK  LAST EVENT"), "{text}");
        assert!(lines[1].starts_with("*******670  ended  answered  1         10s "), "{text}");
        assert!(lines[1].ends_with("  yes    history"), "{text}");
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["*******671", "-", "-", "0", "-", "-", "no", "-"]);
        let json = report_json(&report);
        assert_eq!((&json["contacts"][0]["source"], &json["unknown"]), (&json!("history"), &json!(0)));
    }
}
