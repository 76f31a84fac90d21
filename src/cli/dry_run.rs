//! `campaign --dry-run`: the calling policy's verdict on a campaign without calling anyone. Each
//! chunk goes to CreateSession with `validate_only` (nothing is sent upstream, nothing counted);
//! with `--schedule-within-calling-hours` each chunk is asked to start after the previous one's
//! projected end, deferred into the hours, as the campaign would place it.

use std::{collections::BTreeMap, io::Write, time::SystemTime};

use super::{CliError, Client, contacts};
use crate::{config::CampaignArgs, pb, policy::Pacing};

/// Runs the dry run and prints one line per chunk, then the totals.
pub async fn run(client: &mut Client, args: &CampaignArgs, campaign_id: &str) -> Result<(), CliError> {
    let size = args.chunk_size as usize;
    let path = args.csv.clone();
    let chunks = tokio::task::spawn_blocking(move || {
        let mut chunks: Vec<Vec<pb::Contact>> = Vec::new();
        contacts::read(&path, size, |c| {
            chunks.push(c);
            true
        })
        .map(|()| chunks)
    })
    .await
    .map_err(|e| CliError::Input(e.to_string()))?
    .map_err(CliError::Input)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "dry run: nothing is sent upstream and nothing is counted")?;
    drop(out);
    let pacing = Pacing::new(None, None, None, None);
    let mut after: Option<jiff::Timestamp> = None;
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = 0u64;
    for (i, contacts) in chunks.into_iter().enumerate() {
        let count = contacts.len();
        let request = pb::CreateSessionRequest {
            script_id: args.script.clone(),
            contacts,
            name: args.name.clone(),
            caller_id: args.caller_id.clone(),
            external_session_id: format!("{campaign_id}-{i}"),
            check_variables: args.check_variables,
            purpose: args.purpose.map_or(0, |p| p.to_proto()),
            defer_to_calling_hours: args.schedule_within_calling_hours,
            validate_only: true,
            start_time: after.filter(|_| args.schedule_within_calling_hours).map(crate::convert::timestamp_to_pb),
            ..Default::default()
        };
        let mut out = std::io::stdout().lock();
        match client.create_session(request).await {
            Ok(answer) => {
                let session = answer.into_inner().session.unwrap_or_default();
                let start = session
                    .start_time
                    .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
                    .unwrap_or_else(|| jiff::Timestamp::try_from(SystemTime::now()).unwrap_or_default());
                let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
                for r in &session.rejected_contacts {
                    *reasons.entry(r.reason.as_str()).or_default() += 1;
                    *refused.entry(r.reason.clone()).or_default() += 1;
                }
                let admitted = count - session.rejected_contacts.len();
                let end = start.checked_add(pacing.length(admitted)).unwrap_or(start);
                after = Some(end);
                let reasons: Vec<String> =
                    reasons.iter().map(|(r, n)| format!("{n} {}", super::inert(r))).collect::<Vec<_>>();
                let reasons = if reasons.is_empty() { "none refused".to_owned() } else { reasons.join(", ") };
                writeln!(
                    out,
                    "chunk {i}: {admitted}/{count} contacts would dial from {start} (to about {end}); {reasons}"
                )?;
            }
            Err(status) => {
                failed += 1;
                writeln!(out, "chunk {i}: would fail: {}", super::describe(&status))?;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "chunks that would fail: {failed}")?;
    for (reason, n) in &refused {
        writeln!(out, "  refused {}: {n}", super::inert(reason))?;
    }
    Ok(())
}
