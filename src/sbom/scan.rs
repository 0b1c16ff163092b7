//! Reading an installed tree from disk: every package below `<root>/node_modules` (scoped
//! ones, nested `node_modules` at any depth, symlinked packages), with the lockfile's integrity
//! for each. Never fails: what cannot be read is skipped and said in a warning.

use super::lockfile::{self, LockEntry};
use super::tree::{ManifestError, Package, Tree, child_location};
use redtether_host::error_chain;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Nested `node_modules` deeper than this are not read (npm never nests so deep; a tree that
/// does is a loop the canonical-path check did not catch).
const MAX_DEPTH: usize = 64;

/// An installed tree and what could not be read in it.
#[derive(Debug, Default)]
pub struct Scan {
    pub tree: Tree,
    pub warnings: Vec<String>,
}

/// Reads the tree under `root` (the folder holding `node_modules`). A missing `node_modules`
/// is an empty tree.
pub fn scan(root: &Path) -> Scan {
    let mut scan = Scan::default();
    let locks = read_lockfiles(root, &mut scan.warnings);
    let mut walk = Walk { scan: &mut scan, visited: HashSet::new() };
    if let Ok(canonical) = root.canonicalize() {
        walk.visited.insert(canonical);
    }
    walk.modules(root, "", 0);
    for (location, package) in &mut scan.tree.packages {
        package.integrity = locks
            .iter()
            .filter_map(|lock| lock.get(location))
            .find(|entry| entry.matches(&package.name, &package.version))
            .map(|entry| entry.integrity.clone());
    }
    scan
}

/// `package-lock.json` first, then npm's hidden lockfile, each if present.
fn read_lockfiles(root: &Path, warnings: &mut Vec<String>) -> Vec<BTreeMap<String, LockEntry>> {
    let mut locks = Vec::new();
    for path in [root.join("package-lock.json"), root.join("node_modules").join(".package-lock.json")] {
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                warnings.push(format!("cannot read {}: {e}; its hashes are left out", path.display()));
                continue;
            }
        };
        match serde_json::from_slice(&text) {
            Ok(lock) => locks.push(lockfile::entries(&lock)),
            Err(e) => warnings.push(format!("{} is not valid JSON ({e}); its hashes are left out", path.display())),
        }
    }
    locks
}

/// Why a package folder's package.json gives no package.
#[derive(Debug, thiserror::Error)]
enum PackageJsonError {
    #[error("{0}")]
    Read(#[source] std::io::Error),
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

fn read_package(manifest_path: &Path, dir_name: &str) -> Result<Package, PackageJsonError> {
    let bytes = std::fs::read(manifest_path).map_err(PackageJsonError::Read)?;
    let manifest = serde_json::from_slice(&bytes).map_err(PackageJsonError::Json)?;
    Ok(Package::from_manifest(dir_name, &manifest)?)
}

struct Walk<'a> {
    scan: &'a mut Scan,
    /// Canonical paths of the package folders already read, so a symlink loop ends.
    visited: HashSet<PathBuf>,
}

impl Walk<'_> {
    /// Reads `<dir>/node_modules`, the modules of the package at `location`.
    fn modules(&mut self, dir: &Path, location: &str, depth: usize) {
        let modules = dir.join("node_modules");
        if depth > MAX_DEPTH {
            self.warn(format!("{} is nested too deep; not read", modules.display()));
            return;
        }
        for (name, path) in self.entries(&modules) {
            if name.starts_with('@') {
                for (bare, path) in self.entries(&path) {
                    self.package(&path, &child_location(location, &format!("{name}/{bare}")), depth);
                }
            } else {
                self.package(&path, &child_location(location, &name), depth);
            }
        }
    }

    /// The folders in `dir` not starting with `.` (`.bin`, `.package-lock.json`, `.cache`),
    /// by name. A missing folder has none.
    fn entries(&mut self, dir: &Path) -> Vec<(String, PathBuf)> {
        let read = match std::fs::read_dir(dir) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                self.warn(format!("cannot read {}: {e}", dir.display()));
                return Vec::new();
            }
        };
        let mut entries = Vec::new();
        for entry in read.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                self.warn(format!("skipping {}: its name is not UTF-8", entry.path().display()));
                continue;
            };
            // Follows symlinks: a linked package is a package; files are not.
            if !name.starts_with('.') && entry.path().is_dir() {
                entries.push((name, entry.path()));
            }
        }
        entries.sort();
        entries
    }

    fn package(&mut self, path: &Path, location: &str, depth: usize) {
        let canonical = match path.canonicalize() {
            Ok(c) => c,
            Err(e) => {
                self.warn(format!("skipping {}: {e}", path.display()));
                return;
            }
        };
        let manifest_path = path.join("package.json");
        let dir_name = location.rsplit_once("node_modules/").map_or(location, |(_, name)| name);
        match read_package(&manifest_path, dir_name) {
            Ok(package) => self.scan.tree.insert(location, package),
            Err(e) => self.warn(format!("skipping {}: {}", manifest_path.display(), error_chain(&e))),
        }
        // A second link to a folder already read is recorded, not read again.
        if self.visited.insert(canonical) {
            self.modules(path, location, depth + 1);
        }
    }

    fn warn(&mut self, message: String) {
        self.scan.warnings.push(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_package(dir: &Path, json: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("package.json"), json).unwrap();
    }

    #[test]
    fn reads_scoped_nested_and_linked_packages_and_skips_odd_ones() {
        let root = tempfile::tempdir().unwrap();
        let nm = root.path().join("node_modules");
        write_package(&nm.join("a"), r#"{"name":"a","version":"1.0.0","dependencies":{"b":"1"}}"#);
        write_package(&nm.join("a/node_modules/b"), r#"{"name":"b","version":"1.0.0"}"#);
        write_package(&nm.join("@s/c"), r#"{"name":"@s/c","version":"2.0.0"}"#);
        write_package(&nm.join("broken"), "{ not json");
        write_package(&nm.join("noversion"), r#"{"name":"noversion"}"#);
        fs::create_dir_all(nm.join(".bin")).unwrap();
        fs::write(nm.join(".package-lock.json"), "{}").unwrap();
        fs::create_dir_all(nm.join("empty-dir")).unwrap();
        // A linked package outside the tree, and a link back up to the root: a loop.
        let outside = tempfile::tempdir().unwrap();
        write_package(outside.path(), r#"{"name":"linked","version":"3.0.0"}"#);
        std::os::unix::fs::symlink(outside.path(), nm.join("linked")).unwrap();
        std::os::unix::fs::symlink(root.path(), nm.join("a/node_modules/loop")).unwrap();
        std::os::unix::fs::symlink(nm.join("nowhere"), nm.join("dangling")).unwrap();

        let s = scan(root.path());
        assert_eq!(
            s.tree.packages.keys().collect::<Vec<_>>(),
            ["node_modules/@s/c", "node_modules/a", "node_modules/a/node_modules/b", "node_modules/linked"]
        );
        assert_eq!(s.tree.get("node_modules/@s/c").unwrap().name, "@s/c");
        let joined = s.warnings.join("\n");
        assert!(joined.contains("broken/package.json: not valid JSON"), "{joined}");
        assert!(joined.contains("noversion/package.json: package.json has no \"version\""), "{joined}");
        assert!(joined.contains("empty-dir/package.json"), "{joined}");
        assert!(joined.contains("loop/package.json"), "the loop's target has no package.json: {joined}");
        assert_eq!(s.warnings.len(), 4, "{joined}");
    }

    #[test]
    fn a_link_loop_between_packages_ends() {
        let root = tempfile::tempdir().unwrap();
        let nm = root.path().join("node_modules");
        write_package(&nm.join("a"), r#"{"name":"a","version":"1.0.0"}"#);
        fs::create_dir_all(nm.join("a/node_modules")).unwrap();
        std::os::unix::fs::symlink(nm.join("a"), nm.join("a/node_modules/a")).unwrap();
        let s = scan(root.path());
        // a, and the link to it inside it, recorded once more but not read again.
        assert_eq!(s.tree.packages.keys().collect::<Vec<_>>(), ["node_modules/a", "node_modules/a/node_modules/a"]);
    }

    #[test]
    fn integrity_comes_from_the_lockfile_only_for_the_version_installed() {
        let root = tempfile::tempdir().unwrap();
        let nm = root.path().join("node_modules");
        write_package(&nm.join("a"), r#"{"name":"a","version":"1.0.0"}"#);
        write_package(&nm.join("b"), r#"{"name":"b","version":"2.0.0"}"#);
        write_package(&nm.join("c"), r#"{"name":"c","version":"1.0.0"}"#);
        fs::write(
            root.path().join("package-lock.json"),
            r#"{"lockfileVersion":3,"packages":{
                "node_modules/a":{"version":"1.0.0","integrity":"sha1-A"},
                "node_modules/b":{"version":"1.0.0","integrity":"sha1-OLD"}}}"#,
        )
        .unwrap();
        fs::write(
            nm.join(".package-lock.json"),
            r#"{"lockfileVersion":3,"packages":{
                "node_modules/b":{"version":"2.0.0","integrity":"sha1-B"},
                "node_modules/c":{"version":"1.0.0","integrity":"sha1-C"}}}"#,
        )
        .unwrap();
        let s = scan(root.path());
        let integrity = |l: &str| s.tree.get(l).unwrap().integrity.clone();
        assert_eq!(integrity("node_modules/a").as_deref(), Some("sha1-A"));
        assert_eq!(integrity("node_modules/b").as_deref(), Some("sha1-B"), "the hidden lockfile matches the version");
        assert_eq!(integrity("node_modules/c").as_deref(), Some("sha1-C"));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn a_broken_lockfile_is_a_warning_and_no_hashes() {
        let root = tempfile::tempdir().unwrap();
        write_package(&root.path().join("node_modules/a"), r#"{"name":"a","version":"1.0.0"}"#);
        fs::write(root.path().join("package-lock.json"), "{").unwrap();
        let s = scan(root.path());
        assert_eq!(s.tree.get("node_modules/a").unwrap().integrity, None);
        assert!(s.warnings[0].contains("package-lock.json is not valid JSON"), "{:?}", s.warnings);
    }

    #[test]
    fn no_node_modules_is_an_empty_tree() {
        let root = tempfile::tempdir().unwrap();
        let s = scan(root.path());
        assert!(s.tree.packages.is_empty());
        assert!(s.warnings.is_empty());
    }
}
