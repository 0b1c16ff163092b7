//! Snapshots on disk. Node-RED's user dir `<state_dir>/node-red` becomes a symlink to one
//! generation, `<state_dir>/node-red.d/<gen>`, once the first deployment arrives (a user dir
//! that is still a plain directory is moved to generation `g0` first). A deployment is staged
//! in a new generation, made durable, and switched to by renaming a new symlink over the old
//! one — one atomic step, so after a power cut `node-red` names the old generation or the new
//! one, both complete.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const GENERATIONS: &str = "node-red.d";

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(state_root: &Path) -> Self {
        Layout { root: state_root.to_path_buf() }
    }
    pub fn user_dir(&self) -> PathBuf {
        self.root.join("node-red")
    }
    pub fn generation(&self, name: &str) -> PathBuf {
        self.root.join(GENERATIONS).join(name)
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("deploy").join("state.json")
    }

    /// The generation `node-red` points at; `None` while it is still a plain directory.
    pub fn current(&self) -> io::Result<Option<String>> {
        match fs::read_link(self.user_dir()) {
            Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput || e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Moves a plain user dir into generation `g0` and points `node-red` at it. Returns the
    /// generation now current.
    pub fn adopt(&self) -> io::Result<String> {
        if let Some(current) = self.current()? {
            return Ok(current);
        }
        let g0 = self.generation("g0");
        fs::create_dir_all(g0.parent().unwrap_or(&self.root))?;
        let user_dir = self.user_dir();
        if user_dir.exists() {
            fs::rename(&user_dir, &g0)?;
        } else {
            fs::create_dir_all(&g0)?;
        }
        sync_dir(&self.root)?;
        self.point_at("g0")?;
        Ok("g0".into())
    }

    /// Atomically points `node-red` at `generation` (which must be complete and durable).
    pub fn point_at(&self, generation: &str) -> io::Result<()> {
        let link = self.root.join(".node-red.link");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new(GENERATIONS).join(generation), &link)?;
        fs::rename(&link, self.user_dir())?;
        sync_dir(&self.root)
    }

    /// A fresh, empty directory for `generation` (what an interrupted attempt left is removed).
    pub fn fresh_generation(&self, generation: &str) -> io::Result<PathBuf> {
        let dir = self.generation(generation);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Removes every generation but `keep`.
    pub fn prune(&self, keep: &[&str]) {
        let Ok(entries) = fs::read_dir(self.root.join(GENERATIONS)) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name.as_str())
                && let Err(e) = fs::remove_dir_all(entry.path())
            {
                tracing::warn!(generation = %name, error = %e, "cannot remove an old snapshot");
            }
        }
    }
}

/// fsyncs every file and directory under `dir`, so a staged generation is on disk before the
/// switch makes it current.
pub fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Copies the entries `names` of `from` (files, or folders with everything in them) into `to`:
/// what belongs to the device rather than to a snapshot — the editor's per-user settings, the
/// flow library, context kept on disk — so a deployment does not lose it.
pub fn carry_over(from: &Path, to: &Path, names: &[&str]) -> io::Result<()> {
    for name in names {
        copy_entry(&from.join(name), &to.join(name))?;
    }
    Ok(())
}

fn copy_entry(source: &Path, target: &Path) -> io::Result<()> {
    let Ok(meta) = fs::symlink_metadata(source) else { return Ok(()) };
    if meta.is_dir() {
        fs::create_dir_all(target)?;
        for entry in fs::read_dir(source)? {
            let entry = entry?;
            copy_entry(&entry.path(), &target.join(entry.file_name()))?;
        }
    } else if meta.is_file() {
        fs::copy(source, target)?;
    }
    // Symlinks and special files are not the device's data: left behind.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_user_dir_is_adopted_then_switched_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        fs::create_dir_all(layout.user_dir()).unwrap();
        fs::write(layout.user_dir().join("flows.json"), b"[1]").unwrap();
        assert_eq!(layout.current().unwrap(), None);
        assert_eq!(layout.adopt().unwrap(), "g0");
        assert_eq!(layout.current().unwrap().as_deref(), Some("g0"));
        assert_eq!(fs::read(layout.user_dir().join("flows.json")).unwrap(), b"[1]");
        assert_eq!(layout.adopt().unwrap(), "g0", "adopting twice changes nothing");

        let g1 = layout.fresh_generation("g1").unwrap();
        fs::write(g1.join("flows.json"), b"[2]").unwrap();
        sync_tree(&g1).unwrap();
        layout.point_at("g1").unwrap();
        assert_eq!(layout.current().unwrap().as_deref(), Some("g1"));
        assert_eq!(fs::read(layout.user_dir().join("flows.json")).unwrap(), b"[2]");
        layout.point_at("g0").unwrap();
        assert_eq!(fs::read(layout.user_dir().join("flows.json")).unwrap(), b"[1]");

        std::fs::create_dir_all(layout.generation("g0").join("context/global")).unwrap();
        std::fs::write(layout.generation("g0").join("context/global/global.json"), b"{\"n\":1}").unwrap();
        std::fs::write(layout.generation("g0").join(".config.users.json"), b"{}").unwrap();
        let g2 = layout.fresh_generation("g2").unwrap();
        carry_over(&layout.generation("g0"), &g2, &["context", ".config.users.json", "lib"]).unwrap();
        assert_eq!(fs::read(g2.join("context/global/global.json")).unwrap(), b"{\"n\":1}");
        assert!(g2.join(".config.users.json").is_file());
        assert!(!g2.join("lib").exists(), "what is not there is skipped");

        layout.prune(&["g0"]);
        assert!(!g1.exists());
        assert!(layout.generation("g0").exists());
    }
}
