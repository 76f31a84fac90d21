//! `callbot-facade campaign`: a CSV file to `CreateCampaign`. Scans the whole file first (bad
//! rows reported by line number, nothing sent), then streams it in batches while showing
//! progress (a bar on a terminal, plain lines otherwise), and ends with a summary. The default
//! campaign id derives from the file, the script and the chunk size, so re-running the same
//! command resumes: chunks already started answer `resumed` and nobody is called twice.
//! With `--watch` it then follows the sessions it started to the end ([`super::follow`]).

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    path::PathBuf,
};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{CliError, connect, contacts};
use crate::{
    config::CampaignArgs,
    domain::{ScriptVariables, mask_phone},
    pb::{self, create_campaign_request::Item},
};

/// Contacts per request message: small messages keep the facade's reading fine-grained.
const BATCH: usize = 200;

/// What the answers said so far.
#[derive(Debug, Default)]
struct Tally {
    started: u64,
    resumed: u64,
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    /// Each refused contact: (phone as sent, reason).
    refused: Vec<(String, String)>,
    /// The ids of the sessions started by this run, for `--watch`.
    sessions: Vec<String>,
}

impl Tally {
    fn add(&mut self, answer: &pb::CreateCampaignResponse) {
        if answer.resumed {
            self.resumed += 1;
        } else {
            self.started += 1;
            if let Some(id) = answer.session.as_ref().map(|s| &s.id).filter(|id| !id.is_empty()) {
                self.sessions.push(id.clone());
            }
        }
        self.accepted = u64::try_from(answer.contacts_total).unwrap_or_default();
        for r in answer.session.iter().flat_map(|s| &s.rejected_contacts) {
            *self.rejected.entry(r.reason.clone()).or_default() += 1;
            self.refused.push((r.phone.clone(), r.reason.clone()));
        }
    }

    fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let rejected: u64 = self.rejected.values().sum();
        writeln!(
            out,
            "sessions started: {} ({} new, {} resumed)",
            self.started + self.resumed,
            self.started,
            self.resumed
        )?;
        writeln!(out, "contacts accepted: {}", self.accepted - rejected.min(self.accepted))?;
        writeln!(out, "contacts rejected: {rejected}")?;
        for (reason, n) in &self.rejected {
            writeln!(out, "  {}: {n}", super::inert(reason))?;
        }
        if !self.sessions.is_empty() {
            let ids = self.sessions.join(" ");
            writeln!(out, "session ids (for report --session and watch --session): {}", super::inert(&ids))?;
        }
        if self.resumed > 0 {
            writeln!(
                out,
                "(contacts of resumed sessions count as accepted: their rejections were reported by the first run)"
            )?;
        }
        Ok(())
    }
}

/// Runs the command.
pub async fn run(args: CampaignArgs) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    // The script's variables, to say before sending which required ones the file leaves out
    // (a refusal with --check-variables, a warning without).
    let variables = match client.get_script(pb::GetScriptRequest { script_id: args.script.clone() }).await {
        Ok(answer) => {
            let script = answer.into_inner().script.unwrap_or_default();
            Some(ScriptVariables::new(script.variables.iter().map(|v| (v.field_code.as_str(), v.is_dynamic_attribute))))
        }
        Err(status) if args.check_variables => return Err(CliError::Rpc(status)),
        Err(status) => {
            eprintln!("warning: cannot check the CSV against the script's variables: {}", super::describe(&status));
            None
        }
    };
    let path = args.csv.clone();
    let check = args.check_variables;
    let scan = tokio::task::spawn_blocking(move || contacts::scan(&path, variables.as_ref(), check))
        .await
        .map_err(|e| CliError::Input(e.to_string()))?
        .map_err(CliError::Input)?;
    if !scan.missing_required.is_empty() {
        eprintln!(
            "warning: {} has no column for the script's required variable(s) {}: their calls will read them empty \
             (--check-variables refuses such a file)",
            args.csv.display(),
            scan.missing_required.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ")
        );
    }
    if scan.delimiter != b',' {
        eprintln!("(columns separated by {})", contacts::separator_name(scan.delimiter));
    }
    let derived = args.campaign_id.is_none();
    let campaign_id = args
        .campaign_id
        .clone()
        .unwrap_or_else(|| contacts::derived_campaign_id(&scan.digest, &args.script, args.chunk_size));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "campaign {campaign_id}: {} contacts from {}, script {}, chunks of {}",
        scan.rows,
        args.csv.display(),
        args.script,
        args.chunk_size
    )?;
    if derived {
        writeln!(out, "(id derived from the file, the script and the chunk size: re-run the same command to resume)")?;
    }
    drop(out);

    let (tx, rx) = mpsc::channel(4);
    let spec = pb::CampaignSpec {
        campaign_id: campaign_id.clone(),
        script_id: args.script.clone(),
        name: args.name.clone(),
        caller_id: args.caller_id.clone(),
        chunk_size: i32::try_from(args.chunk_size).unwrap_or(i32::MAX),
        check_variables: args.check_variables,
        purpose: args.purpose.map_or(0, |p| p.to_proto()),
        schedule_within_calling_hours: args.schedule_within_calling_hours,
        ..Default::default()
    };
    if args.dry_run {
        return super::dry_run::run(&mut client, &args, &campaign_id).await;
    }
    let _ = tx.send(pb::CreateCampaignRequest { item: Some(Item::Spec(spec)) }).await;
    let reader = spawn_reader(args.csv.clone(), tx);

    let progress = Progress::new(scan.rows);
    let mut tally = Tally::default();
    let result = async {
        let mut answers = client.create_campaign(ReceiverStream::new(rx)).await?.into_inner();
        while let Some(answer) = answers.message().await? {
            tally.add(&answer);
            progress.chunk(&answer, scan.rows);
        }
        Ok::<(), tonic::Status>(())
    }
    .await;
    progress.finish();
    let mut out = std::io::stdout().lock();
    tally.write(&mut out)?;
    drop(out);
    write_refused(&args, &tally.refused)?;
    result.map_err(CliError::Rpc)?;
    // The facade ends the stream only after our side closed, so the reader is done.
    reader.join().unwrap_or_else(|_| Err("the CSV reader failed".into())).map_err(CliError::Input)?;
    if args.watch {
        super::follow::run(&mut client, tally.sessions, tally.resumed, args.watch_timeout).await?;
    }
    Ok(())
}

/// The refused contacts with their CSV line and reason, and with `--rejects FILE` their rows
/// (the file's own header and separator) for a re-run once fixed.
fn write_refused(args: &CampaignArgs, refused: &[(String, String)]) -> Result<(), CliError> {
    if refused.is_empty() {
        if let Some(path) = &args.rejects {
            // An empty file with the header still says "nothing was refused" to a script.
            contacts::write_rows(&args.csv, path, &[]).map_err(CliError::Input)?;
        }
        return Ok(());
    }
    let phones: Vec<&str> = refused.iter().map(|(p, _)| p.as_str()).collect();
    let found = contacts::locate(&args.csv, &phones).map_err(CliError::Input)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "refused contacts (line in {}, phone, reason):", args.csv.display())?;
    for (phone, reason) in refused {
        match found.get(phone.as_str()) {
            Some(line) => writeln!(out, "  line {line}: {} {}", mask_phone(phone), super::inert(reason))?,
            None => writeln!(out, "  line ?: {} {}", mask_phone(phone), super::inert(reason))?,
        }
    }
    drop(out);
    if let Some(path) = &args.rejects {
        let mut lines: Vec<u64> = phones.iter().filter_map(|p| found.get(*p).copied()).collect();
        lines.sort_unstable();
        contacts::write_rows(&args.csv, path, &lines).map_err(CliError::Input)?;
        println!("refused rows written to {} (same columns, for a re-run once fixed)", path.display());
    }
    Ok(())
}

/// Streams the file's contacts into `tx` from a thread of its own (file reads block). Not a
/// runtime blocking task: after a failed call it may still wait on a full channel, and the
/// process must be able to exit without it.
fn spawn_reader(
    path: PathBuf,
    tx: mpsc::Sender<pb::CreateCampaignRequest>,
) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        contacts::read(&path, BATCH, |contacts| {
            let message = pb::CreateCampaignRequest { item: Some(Item::Batch(pb::ContactBatch { contacts })) };
            tx.blocking_send(message).is_ok()
        })
    })
}

/// A bar on a terminal; one line per chunk on stderr otherwise (logs, CI).
enum Progress {
    Bar(ProgressBar),
    Lines,
}

impl Progress {
    fn new(total: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines;
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} contacts {msg} ({elapsed}, eta {eta})") {
            bar.set_style(style);
        }
        Progress::Bar(bar)
    }

    fn chunk(&self, answer: &pb::CreateCampaignResponse, total: u64) {
        let key = answer.session.as_ref().map(|s| s.external_session_id.as_str()).unwrap_or_default();
        let id = answer.session.as_ref().map(|s| s.id.as_str()).unwrap_or_default();
        let done = u64::try_from(answer.contacts_total).unwrap_or_default();
        let what = if answer.resumed {
            "resumed (started by an earlier run)".to_owned()
        } else {
            format!("started as session {}", super::inert(id))
        };
        match self {
            Progress::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(format!("{key} {what}"));
            }
            Progress::Lines => eprintln!("chunk {}: {key} {what}, {done}/{total} contacts", answer.chunk_index),
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
