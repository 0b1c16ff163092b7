//! `redtether audit list|tail|verify|export`: through the control socket while the daemon runs
//! (it holds the journal), directly from the journal (under the state lock) when it does not.

use super::{ask, error_chain, exit};
use crate::audit::query::{Filter, Since};
use crate::audit::store::{SledStore, StoreError};
use crate::audit::{Journal, StoredEvent, Verification};
use crate::config::Settings;
use crate::control::{AuditPage, ClientError, ControlRequest, StatusReply};
use crate::state_dir::{StateDir, StateDirError, StateLock};
use clap::Subcommand;
use serde::de::IgnoredAny;
use std::io::Write;
use std::path::PathBuf;
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

/// Why an audit command could not read the journal or print it.
#[derive(Debug, thiserror::Error)]
pub enum AuditCommandError {
    #[error(transparent)]
    Daemon(#[from] ClientError),
    #[error("no audit journal at {}", .0.display())]
    NoJournal(PathBuf),
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error(transparent)]
    Journal(#[from] StoreError),
    #[error("audit tail -f needs the running daemon")]
    FollowNeedsDaemon,
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Write(std::io::Error),
    /// Standard output was closed (`| head`): the reader has what it wanted.
    #[error("standard output is closed")]
    OutputClosed,
}

/// The journal, through the daemon or opened here.
enum Source {
    Daemon,
    Local { journal: Box<Journal<SledStore>>, _lock: StateLock },
}

impl Source {
    fn open(settings: &Settings) -> Result<Source, AuditCommandError> {
        // Any answer will do: this only asks whether a daemon holds the journal.
        match ask::<IgnoredAny>(settings, &ControlRequest::Status) {
            Ok(_) => return Ok(Source::Daemon),
            Err(ClientError::NotRunning(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let dir = StateDir::new(&settings.state_dir);
        let journal_dir = dir.audit_dir();
        if !journal_dir.join("db").exists() {
            return Err(AuditCommandError::NoJournal(journal_dir));
        }
        let lock = dir.lock()?;
        let journal = Journal::open(SledStore::open(&journal_dir)?, u64::MAX)?;
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
    ) -> Result<AuditPage, AuditCommandError> {
        match self {
            Source::Daemon => {
                let request = ControlRequest::AuditRead {
                    after,
                    limit: PAGE,
                    kind: filter.kind.clone(),
                    since: raw_since.map(str::to_string),
                    wait_ms,
                };
                Ok(ask::<AuditPage>(settings, &request)?)
            }
            Source::Local { journal, .. } => {
                let page = journal.read(after, PAGE as usize)?;
                let next = page.last().map_or(after, |e| e.seq);
                Ok(AuditPage { events: page.into_iter().filter(|e| filter.matches(e)).collect(), next })
            }
        }
    }

    fn verify(&mut self, settings: &Settings) -> Result<Verification, AuditCommandError> {
        match self {
            Source::Daemon => Ok(ask::<Verification>(settings, &ControlRequest::AuditVerify)?),
            Source::Local { journal, .. } => Ok(journal.verify()?),
        }
    }

    fn head(&mut self, settings: &Settings) -> Result<u64, AuditCommandError> {
        match self {
            Source::Daemon => {
                let status = ask::<StatusReply>(settings, &ControlRequest::Status)?;
                Ok(status.audit.map_or(0, |audit| audit.last_seq))
            }
            Source::Local { journal, .. } => Ok(journal.meta().last_seq),
        }
    }
}

pub fn run(settings: &Settings, command: AuditCommand) -> ExitCode {
    let mut source = match Source::open(settings) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("redtether: {}", error_chain(&e));
            return exit::code(exit::FAILURE);
        }
    };
    let result = match command {
        AuditCommand::List { since, kind, json } => {
            let parsed = match since.as_deref().map(Since::parse).transpose() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("redtether: --since: {}", error_chain(&e));
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
        Ok(()) | Err(AuditCommandError::OutputClosed) => exit::code(exit::OK),
        Err(e) => {
            eprintln!("redtether: {}", error_chain(&e));
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
) -> Result<(), AuditCommandError> {
    let mut out = std::io::stdout().lock();
    loop {
        let AuditPage { events, next } = source.page(settings, after, filter, raw_since, None)?;
        for e in &events {
            print_event(&mut out, e, json)?;
        }
        if next == after {
            return Ok(());
        }
        after = next;
    }
}

fn tail(
    source: &mut Source,
    settings: &Settings,
    lines: u64,
    follow: bool,
    json: bool,
) -> Result<(), AuditCommandError> {
    if follow && matches!(source, Source::Local { .. }) {
        return Err(AuditCommandError::FollowNeedsDaemon);
    }
    let head = source.head(settings)?;
    let mut after = head.saturating_sub(lines);
    print_all(source, settings, after, &Filter::default(), None, json)?;
    after = after.max(head);
    let mut out = std::io::stdout().lock();
    if follow {
        loop {
            let AuditPage { events, next } = source.page(settings, after, &Filter::default(), None, Some(10_000))?;
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
            eprintln!("redtether: {}", error_chain(&e));
            exit::code(exit::FAILURE)
        }
    }
}

fn print_event(out: &mut impl Write, e: &StoredEvent, json: bool) -> Result<(), AuditCommandError> {
    let line = if json {
        serde_json::to_string(e)?
    } else {
        let detail =
            if e.detail.is_empty() { String::new() } else { serde_json::Value::Object(e.detail.clone()).to_string() };
        format!("{:>6}  {}  {:<18} {:<26} {}  {detail}", e.seq, e.ts, e.kind, e.actor.to_string(), e.target)
    };
    // A closed pipe (`| head`) ends the listing quietly.
    writeln!(out, "{line}").map_err(|err| match err.kind() {
        std::io::ErrorKind::BrokenPipe => AuditCommandError::OutputClosed,
        _ => AuditCommandError::Write(err),
    })
}
