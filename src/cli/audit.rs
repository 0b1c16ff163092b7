//! `redtether audit list|tail|verify|export`: through the control socket while the daemon runs
//! (it holds the journal), directly from the journal (under the state lock) when it does not.

use super::{ask, exit};
use crate::audit::query::{Filter, Since};
use crate::audit::store::SledStore;
use crate::audit::{Journal, StoredEvent, Verification};
use crate::config::Settings;
use crate::control::{ClientError, ControlRequest};
use crate::state_dir::{StateDir, StateLock};
use clap::Subcommand;
use std::io::Write;
use std::process::ExitCode;

/// Events fetched per request.
const PAGE: u32 = 1000;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List events, oldest first
    List {
        /// From this sequence number, or from this RFC 3339 time
        #[arg(long, value_name = "SEQ|TIME")]
        since: Option<String>,
        /// Only this kind, or a dotted prefix of kinds (`auth` matches `auth.failed`)
        #[arg(long)]
        kind: Option<String>,
        /// JSON Lines, one event per line, with every field
        #[arg(long)]
        json: bool,
    },
    /// Show the newest events, and with -f keep showing new ones
    Tail {
        /// How many of the newest events to show first
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u64,
        /// Keep following (needs the running daemon)
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Recompute the hash chain; exit 0, or 1 naming the first bad sequence number
    Verify,
    /// Every event as JSON Lines on stdout
    Export,
}

/// The journal, through the daemon or opened here.
enum Source {
    Daemon,
    Local { journal: Box<Journal<SledStore>>, _lock: StateLock },
}

impl Source {
    fn open(settings: &Settings) -> Result<Source, String> {
        match ask(settings, &ControlRequest::Status) {
            Ok(_) => return Ok(Source::Daemon),
            Err(ClientError::NotRunning(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        let dir = StateDir::new(&settings.state_dir);
        let journal_dir = dir.audit_dir();
        if !journal_dir.join("db").exists() {
            return Err(format!("no audit journal at {}", journal_dir.display()));
        }
        let lock = dir.lock().map_err(|e| e.to_string())?;
        let store = SledStore::open(&journal_dir).map_err(|e| e.to_string())?;
        let journal = Journal::open(store, u64::MAX).map_err(|e| e.to_string())?;
        Ok(Source::Local { journal: Box::new(journal), _lock: lock })
    }

    /// Events after `after` matching `filter`, and the sequence number to continue after.
    fn page(
        &mut self,
        settings: &Settings,
        after: u64,
        filter: &Filter,
        raw_since: Option<&str>,
        wait_ms: Option<u64>,
    ) -> Result<(Vec<StoredEvent>, u64), String> {
        match self {
            Source::Daemon => {
                let request = ControlRequest::AuditRead {
                    after,
                    limit: PAGE,
                    kind: filter.kind.clone(),
                    since: raw_since.map(str::to_string),
                    wait_ms,
                };
                let result = ask(settings, &request).map_err(|e| e.to_string())?;
                let events: Vec<StoredEvent> =
                    serde_json::from_value(result["events"].clone()).map_err(|e| format!("unexpected answer: {e}"))?;
                Ok((events, result["next"].as_u64().unwrap_or(after)))
            }
            Source::Local { journal, .. } => {
                let page = journal.read(after, PAGE as usize).map_err(|e| e.to_string())?;
                let next = page.last().map_or(after, |e| e.seq);
                Ok((page.into_iter().filter(|e| filter.matches(e)).collect(), next))
            }
        }
    }

    fn verify(&mut self, settings: &Settings) -> Result<Verification, String> {
        match self {
            Source::Daemon => {
                let result = ask(settings, &ControlRequest::AuditVerify).map_err(|e| e.to_string())?;
                Ok(Verification {
                    checked: result["checked"].as_u64().unwrap_or(0),
                    first_seq: result["first_seq"].as_u64(),
                    last_seq: result["last_seq"].as_u64(),
                    first_bad: result["first_bad"]
                        .as_array()
                        .and_then(|a| Some((a.first()?.as_u64()?, a.get(1)?.as_str()?.to_string()))),
                })
            }
            Source::Local { journal, .. } => journal.verify().map_err(|e| e.to_string()),
        }
    }

    fn head(&mut self, settings: &Settings) -> Result<u64, String> {
        match self {
            Source::Daemon => {
                let status = ask(settings, &ControlRequest::Status).map_err(|e| e.to_string())?;
                Ok(status["audit"]["last_seq"].as_u64().unwrap_or(0))
            }
            Source::Local { journal, .. } => Ok(journal.meta().last_seq),
        }
    }
}

pub fn run(settings: &Settings, command: AuditCommand) -> ExitCode {
    let mut source = match Source::open(settings) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("redtether: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let result = match command {
        AuditCommand::List { since, kind, json } => {
            let parsed = match since.as_deref().map(Since::parse).transpose() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("redtether: --since: {e}");
                    return exit::code(exit::FAILURE);
                }
            };
            let after = parsed.as_ref().map_or(0, Since::read_after);
            let filter = Filter { kind, since: parsed };
            print_all(&mut source, settings, after, &filter, since.as_deref(), json)
        }
        AuditCommand::Export => print_all(&mut source, settings, 0, &Filter::default(), None, true),
        AuditCommand::Tail { lines, follow, json } => tail(&mut source, settings, lines, follow, json),
        AuditCommand::Verify => return verify(&mut source, settings),
    };
    match result {
        // An empty error is a closed pipe (`| head`): the reader has what it wanted.
        Ok(()) => exit::code(exit::OK),
        Err(e) if e.is_empty() => exit::code(exit::OK),
        Err(e) => {
            eprintln!("redtether: {e}");
            exit::code(exit::FAILURE)
        }
    }
}

fn print_all(
    source: &mut Source,
    settings: &Settings,
    mut after: u64,
    filter: &Filter,
    raw_since: Option<&str>,
    json: bool,
) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    loop {
        let (events, next) = source.page(settings, after, filter, raw_since, None)?;
        for e in &events {
            print_event(&mut out, e, json)?;
        }
        if next == after {
            return Ok(());
        }
        after = next;
    }
}

fn tail(source: &mut Source, settings: &Settings, lines: u64, follow: bool, json: bool) -> Result<(), String> {
    if follow && matches!(source, Source::Local { .. }) {
        return Err("audit tail -f needs the running daemon".into());
    }
    let head = source.head(settings)?;
    let mut after = head.saturating_sub(lines);
    print_all(source, settings, after, &Filter::default(), None, json)?;
    after = after.max(head);
    let mut out = std::io::stdout().lock();
    if follow {
        loop {
            let (events, next) = source.page(settings, after, &Filter::default(), None, Some(10_000))?;
            for e in &events {
                print_event(&mut out, e, json)?;
            }
            after = next;
        }
    }
    Ok(())
}

fn verify(source: &mut Source, settings: &Settings) -> ExitCode {
    match source.verify(settings) {
        Ok(Verification { first_bad: Some((seq, why)), .. }) => {
            eprintln!("redtether: audit chain broken at seq {seq}: {why}");
            exit::code(exit::FAILURE)
        }
        Ok(v) => {
            match (v.first_seq, v.last_seq) {
                (Some(first), Some(last)) => println!("audit chain OK: {} events, seq {first}..{last}", v.checked),
                _ => println!("audit chain OK: no events"),
            }
            exit::code(exit::OK)
        }
        Err(e) => {
            eprintln!("redtether: {e}");
            exit::code(exit::FAILURE)
        }
    }
}

fn print_event(out: &mut impl Write, e: &StoredEvent, json: bool) -> Result<(), String> {
    let line = if json {
        serde_json::to_string(e).map_err(|err| err.to_string())?
    } else {
        let detail =
            if e.detail.is_empty() { String::new() } else { serde_json::Value::Object(e.detail.clone()).to_string() };
        format!("{:>6}  {}  {:<18} {:<26} {}  {detail}", e.seq, e.ts, e.kind, e.actor.to_string(), e.target)
    };
    // A closed pipe (`| head`) ends the listing quietly.
    writeln!(out, "{line}")
        .map_err(|err| if err.kind() == std::io::ErrorKind::BrokenPipe { String::new() } else { err.to_string() })
}
