//! `campaign --watch`: after the campaign was sent, follow its sessions to the end.
//!
//! How: every second, `GetSessionReport` for each session not finished yet (a report is
//! cheap and says `finished` itself; polling needs no cursor bookkeeping and cannot miss an
//! event, and a session the facade does not know yet — `NOT_FOUND` — is asked again next
//! round). Progress: contacts final / contacts total over all sessions, as a bar on a terminal,
//! else a line on stderr whenever it changes. Ends with the outcome totals summed over the
//! sessions; after `--watch-timeout` it stops waiting, prints the totals so far and exits 2.

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressStyle};
use tonic::Code;

use super::CliError;
use crate::pb;

/// Time between two rounds of reports.
const POLL: Duration = Duration::from_secs(1);

/// The outcome totals over the sessions followed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sessions followed.
    pub sessions: usize,
    /// Sessions finished.
    pub finished: usize,
    /// Contacts of every session.
    pub contacts: i64,
    /// Contacts that are final.
    pub final_contacts: i64,
    /// Last outcome ANSWERED.
    pub answered: i64,
    /// Last outcome NO_ANSWER.
    pub no_answer: i64,
    /// Last outcome BUSY.
    pub busy: i64,
    /// Last outcome REJECTED.
    pub rejected: i64,
    /// Last outcome FAILED.
    pub failed: i64,
    /// Given up: the provider never told (outcome UNKNOWN).
    pub unknown: i64,
}

impl Totals {
    /// Sums the latest report of each session (`None`: not known to the facade yet).
    fn of(reports: &[Option<pb::GetSessionReportResponse>]) -> Self {
        let mut t = Totals { sessions: reports.len(), ..Totals::default() };
        for r in reports.iter().flatten() {
            t.finished += usize::from(r.finished);
            t.contacts += r.contacts_total;
            t.final_contacts += r.contacts.iter().filter(|c| c.r#final).count() as i64;
            t.answered += r.answered;
            t.no_answer += r.no_answer;
            t.busy += r.busy;
            t.rejected += r.rejected;
            t.failed += r.failed;
            t.unknown += r.unknown;
        }
        t
    }

    /// `outcomes: N contacts, A answered, B no answer, C busy, D rejected, E failed`, then
    /// `, U unknown` when contacts were given up (the rare case: the provider never told).
    pub fn line(&self) -> String {
        let unknown = if self.unknown > 0 { format!(", {} unknown", self.unknown) } else { String::new() };
        format!(
            "outcomes: {} contacts, {} answered, {} no answer, {} busy, {} rejected, {} failed{unknown}",
            self.contacts, self.answered, self.no_answer, self.busy, self.rejected, self.failed
        )
    }
}

/// Follows `sessions` (their ids) until each is finished or `timeout` passed; `skipped` is the
/// number of resumed chunks, whose session ids the facade did not give.
pub async fn run(
    client: &mut super::Client,
    sessions: Vec<String>,
    skipped: u64,
    timeout: Duration,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if skipped > 0 {
        writeln!(
            out,
            "watch: {skipped} resumed chunk(s) skipped: the facade gives no session id for a chunk started by an earlier run"
        )?;
    }
    writeln!(out, "watch: following {} session(s) until every contact is final", sessions.len())?;
    drop(out);
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let mut reports: Vec<Option<pb::GetSessionReportResponse>> = vec![None; sessions.len()];
    let mut progress = Progress::new();
    let totals = loop {
        for (id, report) in sessions.iter().zip(reports.iter_mut()) {
            if report.as_ref().is_some_and(|r| r.finished) {
                continue;
            }
            match client.get_session_report(pb::GetSessionReportRequest { session_id: id.clone() }).await {
                Ok(answer) => *report = Some(answer.into_inner()),
                Err(status) if status.code() == Code::NotFound => {}
                Err(status) => {
                    progress.finish();
                    return Err(CliError::Rpc(status));
                }
            }
        }
        let totals = Totals::of(&reports);
        progress.show(&totals);
        if totals.finished == totals.sessions {
            break totals;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            progress.finish();
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", totals.line())?;
            return Err(CliError::Timeout(format!(
                "stopped waiting after {}: {} of {} session(s) not finished, {}/{} contacts final",
                humantime::format_duration(timeout),
                totals.sessions - totals.finished,
                totals.sessions,
                totals.final_contacts,
                totals.contacts
            )));
        }
        tokio::time::sleep_until((now + POLL).min(deadline)).await;
    };
    progress.finish();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", totals.line())?;
    let took = Duration::from_secs(started.elapsed().as_secs());
    writeln!(out, "watch: all {} session(s) finished ({})", totals.sessions, humantime::format_duration(took))?;
    Ok(())
}

/// A bar on a terminal; a line on stderr at each change otherwise.
enum Progress {
    Bar(ProgressBar),
    Lines((i64, i64, usize)),
}

impl Progress {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines((-1, -1, 0));
        }
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} contacts final {msg} ({elapsed})") {
            bar.set_style(style);
        }
        Progress::Bar(bar)
    }

    fn show(&mut self, t: &Totals) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(u64::try_from(t.contacts).unwrap_or_default());
                bar.set_position(u64::try_from(t.final_contacts).unwrap_or_default());
                bar.set_message(format!("{}/{} sessions finished", t.finished, t.sessions));
            }
            Progress::Lines(last) => {
                let now = (t.final_contacts, t.contacts, t.finished);
                if std::mem::replace(last, now) != now {
                    eprintln!(
                        "watch: {}/{} contacts final, {}/{} sessions finished",
                        t.final_contacts, t.contacts, t.finished, t.sessions
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_the_known_reports() {
        let finished = pb::GetSessionReportResponse {
            contacts_total: 2,
            answered: 1,
            busy: 1,
            finished: true,
            contacts: vec![
                pb::ContactReport { r#final: true, ..Default::default() },
                pb::ContactReport { r#final: true, ..Default::default() },
            ],
            ..Default::default()
        };
        let running = pb::GetSessionReportResponse {
            contacts_total: 1,
            in_progress: 1,
            contacts: vec![pb::ContactReport::default()],
            ..Default::default()
        };
        let t = Totals::of(&[Some(finished), Some(running), None]);
        assert_eq!((t.sessions, t.finished, t.contacts, t.final_contacts), (3, 1, 3, 2));
        assert_eq!(t.line(), "outcomes: 3 contacts, 1 answered, 0 no answer, 1 busy, 0 rejected, 0 failed");
        let given_up =
            pb::GetSessionReportResponse { contacts_total: 1, unknown: 1, finished: true, ..Default::default() };
        assert!(Totals::of(&[Some(given_up)]).line().ends_with(", 0 failed, 1 unknown"));
    }
}
