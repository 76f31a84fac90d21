//! `callbot-facade watch`: the tenant's call events (`WatchCallEvents`) as they come, one line
//! each, as text for an operator or JSON for programs. Ends with exit 0 on Ctrl-C or when the
//! facade ends the stream; an error status (a bad or expired cursor, a draining facade) is
//! described with its cursors so the operator can resume, and exits 1.

use std::io::Write;

use serde_json::{Value, json};

use super::{CliError, clock, connect, outcome_word, seconds_json, seconds_text, source_word, state_word};
use crate::{config::WatchArgs, domain::mask_phone, pb};

/// Runs the command.
pub async fn run(args: WatchArgs) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    let request = pb::WatchCallEventsRequest {
        session_id: args.session.clone(),
        phone: args.phone.clone(),
        after_cursor: args.after.clone(),
        from_start: args.from_start,
    };
    let follow = async {
        let mut stream = client.watch_call_events(request).await.map_err(CliError::Rpc)?.into_inner();
        // The stream is open (and the caller authorized): say so before the first event.
        eprintln!("watching {} (Ctrl-C to stop)", watched(&args));
        while let Some(message) = stream.message().await.map_err(CliError::Rpc)? {
            let Some(event) = message.event else { continue };
            let line = if args.json { json_line(&event) } else { text_line(&event) };
            // Line by line, so a pipe reader sees each event when it happens.
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", super::inert(&line))?;
            out.flush()?;
        }
        Ok(())
    };
    tokio::select! {
        result = follow => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// What is watched, for the line on stderr.
fn watched(args: &WatchArgs) -> String {
    let mut what = match args.session.as_str() {
        "" => "every call of the tenant".to_owned(),
        id => format!("session {id}"),
    };
    if !args.phone.is_empty() {
        what.push_str(&format!(", phone {}", mask_phone(&args.phone)));
    }
    what
}

/// `HH:MM:SS  <masked phone>  <state>  [<outcome>]  [ring Ns] [talk Ns]  [attempt N]  [from history|by the facade]
/// session S  cursor C`: local time of the event (the provider's clock), the phone with only its last 3 digits
/// (the number as the caller gave it when the event is attributed to a contact of a session created through
/// the facade, else as the provider wrote it), the outcome only when set, each duration only when set, the
/// attempt only when known, the source only when not a webhook.
pub fn text_line(e: &pb::CallEvent) -> String {
    let phone = if e.contact_phone.is_empty() { &e.phone } else { &e.contact_phone };
    let mut parts = vec![
        clock::time_of_day(clock::unix_seconds(e.occurred_at.as_ref())),
        mask_phone(phone),
        format!("{:<8}", state_word(e.state())),
    ];
    if e.outcome() != pb::CallOutcome::Unspecified {
        parts.push(format!("{:<9}", outcome_word(e.outcome())));
    }
    let durations: Vec<String> = [("ring", &e.ring_duration), ("talk", &e.talk_duration)]
        .into_iter()
        .filter_map(|(name, d)| d.as_ref().map(|d| format!("{name} {}", seconds_text(d))))
        .collect();
    if !durations.is_empty() {
        parts.push(durations.join(" "));
    }
    if e.attempt > 0 {
        parts.push(format!("attempt {}", e.attempt));
    }
    match e.source() {
        pb::CallEventSource::History => parts.push("from history".to_owned()),
        pb::CallEventSource::Facade => parts.push("by the facade".to_owned()),
        pb::CallEventSource::Webhook | pb::CallEventSource::Unspecified => {}
    }
    let session = if e.session_id.is_empty() { "-" } else { &e.session_id };
    parts.push(format!("session {session}"));
    parts.push(format!("cursor {}", e.cursor));
    parts.join("  ")
}

/// One event as a JSON object on one line: the CallEvent's fields by their proto names, state
/// and outcome as lower-case words, durations as seconds (`null` when unset), `occurred_at` as
/// RFC 3339 UTC, the phones as reported and as given (not masked), the source as a word.
pub fn json_line(e: &pb::CallEvent) -> String {
    let value: Value = json!({
        "id": e.id,
        "cursor": e.cursor,
        "session_id": e.session_id,
        "call_id": e.call_id,
        "phone": e.phone,
        "state": state_word(e.state()),
        "outcome": outcome_word(e.outcome()),
        "occurred_at": e.occurred_at.as_ref().map(clock::rfc3339),
        "ring_duration": seconds_json(e.ring_duration.as_ref()),
        "talk_duration": seconds_json(e.talk_duration.as_ref()),
        "hangup_cause": e.hangup_cause,
        "disposition": e.disposition,
        "has_recording": e.has_recording,
        "attempt": e.attempt,
        "source": source_word(e.source()),
        "contact_phone": e.contact_phone,
    });
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> pb::CallEvent {
        pb::CallEvent {
            id: "c1/cdr".into(),
            cursor: "CUR".into(),
            session_id: "s1".into(),
            call_id: "c1".into(),
            phone: "0912345670".into(),
            state: pb::CallState::Ended.into(),
            outcome: pb::CallOutcome::NoAnswer.into(),
            occurred_at: Some(prost_types::Timestamp { seconds: 3_600, nanos: 0 }),
            ring_duration: Some(prost_types::Duration { seconds: 3, nanos: 0 }),
            talk_duration: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
            attempt: 2,
            ..Default::default()
        }
    }

    #[test]
    fn a_text_line_masks_the_phone_and_ends_with_the_cursor() {
        let line = text_line(&event());
        let (time, rest) = line.split_once("  ").unwrap();
        assert_eq!(time.len(), 8, "{line}");
        assert_eq!(rest, "*******670  ended     no_answer  ring 3s talk 0s  attempt 2  session s1  cursor CUR");
        let ringing = pb::CallEvent { phone: "0912345671".into(), cursor: "K".into(), ..Default::default() };
        let line = text_line(&ringing);
        assert!(line.ends_with("*******671  unspecified  session -  cursor K"), "{line}");
        let reconciled = pb::CallEvent {
            phone: "84912345670".into(),
            contact_phone: "+84 91 234 5670".into(),
            source: pb::CallEventSource::History.into(),
            ..event()
        };
        let line = text_line(&reconciled);
        assert!(line.contains("  attempt 2  from history  session s1"), "{line}");
        assert!(!line.contains("84912"), "masked: {line}");
        let v: Value = serde_json::from_str(&json_line(&reconciled)).unwrap();
        assert_eq!(
            (&v["contact_phone"], &v["phone"], &v["source"]),
            (&json!("+84 91 234 5670"), &json!("84912345670"), &json!("history"))
        );
    }

    #[test]
    fn a_json_line_keeps_the_phone_and_gives_words_and_seconds() {
        let v: Value = serde_json::from_str(&json_line(&event())).unwrap();
        assert_eq!(v["phone"], "0912345670");
        assert_eq!(v["state"], "ended");
        assert_eq!(v["outcome"], "no_answer");
        assert_eq!(v["ring_duration"], 3);
        assert_eq!(v["talk_duration"], 0);
        assert_eq!(v["occurred_at"], "1970-01-01T01:00:00Z");
        assert_eq!(v["cursor"], "CUR");
        assert_eq!(v["attempt"], 2);
    }
}
