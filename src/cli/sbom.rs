//! `redtether sbom [--output FILE] [--latest]`: the device's SBOM (see [`crate::sbom`]) on
//! standard output, or written atomically to a file; with `--latest`, its npm packages are
//! annotated with the newest version the npm registry knows ([`crate::sbom::add_latest`]).

use super::{error_chain, exit};
use crate::config::Settings;
use crate::state_dir::StateDir;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

pub fn run(settings: &Settings, output: Option<&Path>, latest: bool) -> ExitCode {
    // Packages that cannot be read are skipped with a warning: show those on stderr.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .try_init();

    let mut sbom = match crate::sbom::generate(settings) {
        Ok(sbom) => sbom,
        Err(e) => {
            eprintln!("redtether: error: {}", error_chain(&e));
            return exit::code(exit::FAILURE);
        }
    };
    if latest {
        // Never an error: without the registry, cached answers (or none) and a warning.
        let registry = crate::sbom::registry_from_environment();
        crate::sbom::add_latest(&mut sbom, &StateDir::new(&settings.state_dir), &registry);
    }
    let mut text = serde_json::to_string_pretty(&sbom).expect("a JSON value serialises");
    text.push('\n');
    match output {
        None => {
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                eprintln!("redtether: error: cannot write the SBOM to standard output: {e}");
                return exit::code(exit::FAILURE);
            }
        }
        Some(path) => {
            if let Err(e) = write_atomically(path, text.as_bytes()) {
                eprintln!("redtether: error: cannot write the SBOM to {}: {e}", path.display());
                return exit::code(exit::CANT_CREATE);
            }
        }
    }
    exit::code(exit::OK)
}

/// Writes `contents` to a temporary file beside `path`, syncs it and renames it over `path`,
/// so a reader never sees half a document. Readable by others (an SBOM is no secret), as far
/// as the umask lets it.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o644).open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sbom.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_into_a_missing_folder_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_atomically(&dir.path().join("no/such/sbom.json"), b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
