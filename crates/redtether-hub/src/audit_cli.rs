//! `redtether-hub audit list|verify|export`: reads the hub's journal file directly (the hub
//! only ever appends to it, so this works whether or not the hub runs; a line it is writing
//! at that moment is not complete yet and is left out).

use crate::cli::AuditCommand;
use crate::journal::{self, chain};
use redtether_host::exit;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub fn run(state_dir: &Path, command: AuditCommand) -> ExitCode {
    let text = match journal::read(state_dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("redtether-hub: {}", redtether_host::error_chain(&e));
            return exit::code(exit::FAILURE);
        }
    };
    let mut out = std::io::stdout().lock();
    let written = match command {
        AuditCommand::List { after, kind } => journal::events(&text)
            .filter(|e| e.seq > after)
            .filter(|e| kind.as_deref().is_none_or(|k| e.kind == k || e.kind.starts_with(&format!("{k}."))))
            .try_for_each(|e| writeln!(out, "{}", serde_json::to_string(&e).unwrap_or_default())),
        AuditCommand::Export => chain::complete_lines(&text).try_for_each(|line| {
            out.write_all(line)?;
            out.write_all(b"\n")
        }),
        AuditCommand::Verify => {
            let v = chain::verify(&text);
            return match (&v.first_bad, v.first_seq, v.last_seq) {
                (Some((seq, why)), _, _) => {
                    eprintln!("redtether-hub: audit chain broken at seq {seq}: {why}");
                    exit::code(exit::FAILURE)
                }
                (None, Some(first), Some(last)) => {
                    println!("audit chain OK: {} events, seq {first}..{last}", v.checked);
                    exit::code(exit::OK)
                }
                _ => {
                    println!("audit chain OK: no events");
                    exit::code(exit::OK)
                }
            };
        }
    };
    match written {
        Ok(()) => exit::code(exit::OK),
        // `| head` closed the pipe: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::code(exit::OK),
        Err(e) => {
            eprintln!("redtether-hub: {e}");
            exit::code(exit::FAILURE)
        }
    }
}
