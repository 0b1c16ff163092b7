//! Man pages from the clap definitions, so a page lists every command the binary has: clap_mangen
//! renders the name, synopsis, description, options and version; a COMMANDS section lists the
//! whole tree of subcommands (`token create`, `audit verify`, ...) with their arguments; then the
//! hand-written sections the binary's definitions cannot know (files, see also) follow as given.
//! `packaging/build.sh` writes the pages through each binary crate's `man` example.

use clap::Command;
use std::io::Write;

/// The page for `command`, with `tail` (roff: `.SH FILES` and so on) appended.
pub fn render(command: Command, tail: &str) -> std::io::Result<Vec<u8>> {
    let mut command = command;
    command.build();
    let man = clap_mangen::Man::new(command.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        commands(&mut out, sub, "")?;
    }
    out.extend_from_slice(tail.as_bytes());
    if !tail.ends_with('\n') {
        out.push(b'\n');
    }
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// One `.TP` entry per command with no subcommands of its own, named by its whole path.
fn commands(out: &mut Vec<u8>, command: &Command, parent: &str) -> std::io::Result<()> {
    let path =
        if parent.is_empty() { command.get_name().to_string() } else { format!("{parent} {}", command.get_name()) };
    let children: Vec<&Command> =
        command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help").collect();
    if !children.is_empty() {
        for child in children {
            commands(out, child, &path)?;
        }
        return Ok(());
    }
    let mut usage = format!("\\fB{}\\fR", escape(&path));
    for arg in command.get_arguments().filter(|a| !a.is_hide_set() && !a.is_global_set()) {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let value = arg.get_value_names().and_then(|v| v.first()).map_or_else(|| id.to_uppercase(), |v| v.to_string());
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let name = match (arg.get_long(), arg.get_short()) {
            (Some(long), _) => format!("\\-\\-{}", escape(long)),
            (None, Some(short)) => format!("\\-{short}"),
            (None, None) => format!("\\fI{}\\fR", escape(&value)),
        };
        let shown = if takes_value && (arg.get_long().is_some() || arg.get_short().is_some()) {
            format!("{name} \\fI{}\\fR", escape(&value))
        } else {
            name
        };
        usage.push(' ');
        usage.push_str(&if arg.is_required_set() { shown } else { format!("[{shown}]") });
    }
    writeln!(out, ".TP\n{usage}")?;
    if let Some(about) = command.get_about() {
        writeln!(out, "{}", escape(&about.to_string()))?;
    }
    Ok(())
}

/// roff's special characters: a backslash, a hyphen (else a hyphenation point), a line that
/// begins with a dot or an apostrophe (else a request).
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.chars().next() {
        Some('.' | '\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cli() -> Command {
        Command::new("tool")
            .version("1.2.3")
            .about("Does things")
            .subcommand(Command::new("run").about("Run it"))
            .subcommand(
                Command::new("token")
                    .about("Tokens")
                    .subcommand(
                        Command::new("create")
                            .about("Make one")
                            .arg(Arg::new("name").long("name").required(true).value_name("N"))
                            .arg(Arg::new("json").long("json").action(ArgAction::SetTrue)),
                    )
                    .subcommand(Command::new("revoke").about("Revoke one").arg(Arg::new("name").required(true))),
            )
            .subcommand(Command::new("secret").hide(true))
    }

    #[test]
    fn every_leaf_command_is_listed_with_its_arguments() {
        let page = String::from_utf8(render(cli(), ".SH FILES\n.I /etc/tool\n").unwrap()).unwrap();
        assert!(page.contains(".TH tool 1"), "{page}");
        assert!(page.contains("\\fBrun\\fR\nRun it"), "{page}");
        assert!(page.contains("\\fBtoken create\\fR \\-\\-name \\fIN\\fR [\\-\\-json]\nMake one"), "{page}");
        assert!(page.contains("\\fBtoken revoke\\fR \\fINAME\\fR\nRevoke one"), "{page}");
        assert!(!page.contains("secret"), "hidden commands stay hidden");
        assert!(page.contains(".SH FILES\n.I /etc/tool"), "the hand-written tail follows");
        assert!(page.contains("1.2.3"), "the version");
    }

    #[test]
    fn roff_requests_cannot_be_injected() {
        assert_eq!(escape(".SH X"), "\\&.SH X");
        assert_eq!(escape("a-b\\c"), "a\\-b\\ec");
    }
}
