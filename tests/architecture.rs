//! The layering docs/architecture.md draws, checked on the sources: which crate may depend on
//! which, that the protocol crate does no I/O, and that the agent's modules form no cycle. A
//! wrong import fails here, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The names in a manifest's `[dependencies]` (not dev-dependencies: tests may use anything).
fn dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    doc.get("dependencies").and_then(|d| d.as_table()).map(|t| t.keys().cloned().collect()).unwrap_or_default()
}

#[test]
fn crates_depend_only_as_drawn() {
    let crates = root().join("crates");
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("redtether", &["redtether-proto", "redtether-pki", "redtether-host", "redtether-transport"][..]),
        ("redtether-hub", &["redtether-proto", "redtether-pki", "redtether-host", "redtether-transport"][..]),
        ("redtether-host", &["redtether-pki"][..]),
        ("redtether-pki", &[][..]),
        ("redtether-proto", &[][..]),
        ("redtether-testkit", &["redtether-proto", "redtether-pki", "redtether-host", "redtether-transport"][..]),
        ("redtether-transport", &[][..]),
    ]);
    for (name, ours) in &allowed {
        let manifest =
            if *name == "redtether" { root().join("Cargo.toml") } else { crates.join(name).join("Cargo.toml") };
        let internal: BTreeSet<String> =
            dependencies(&manifest).into_iter().filter(|d| d.starts_with("redtether")).collect();
        let expected: BTreeSet<String> = ours.iter().map(|s| s.to_string()).collect();
        assert_eq!(internal, expected, "{name} depends on these workspace crates");
    }
    // And no crate outside the table.
    let members: BTreeSet<String> =
        std::fs::read_dir(&crates).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let known: BTreeSet<String> = allowed.keys().filter(|n| **n != "redtether").map(|n| n.to_string()).collect();
    assert_eq!(members, known, "every crate under crates/ is in this table and in docs/architecture.md");
}

#[test]
fn the_protocol_crate_does_no_io() {
    let deps = dependencies(&root().join("crates/redtether-proto/Cargo.toml"));
    for io in ["tokio", "quinn", "quinn-proto", "sled", "hyper", "reqwest", "nix", "libc", "rustls"] {
        assert!(!deps.contains(io), "redtether-proto depends on {io}");
    }
    let mut sources = Vec::new();
    rust_files(&root().join("crates/redtether-proto/src"), &mut sources);
    for file in &sources {
        let text = std::fs::read_to_string(file).unwrap();
        for io in ["std::fs", "std::net::Tcp", "std::net::Udp", "std::process", "std::thread", "std::env"] {
            assert!(!text.contains(io), "{} uses {io}", file.display());
        }
    }
    // The state machines take their time as an argument: no clock is read in them.
    for file in sources.iter().filter(|f| f.components().any(|c| c.as_os_str() == "session")) {
        let text = std::fs::read_to_string(file).unwrap();
        for clock in ["SystemTime::now", "Instant::now", "unix_now"] {
            assert!(!text.contains(clock), "{} reads the clock ({clock})", file.display());
        }
    }
}

#[test]
fn the_agent_and_the_hub_do_not_reach_into_each_other() {
    for (dir, foreign) in [("src", "redtether_hub"), ("crates/redtether-hub/src", "redtether::")] {
        let mut files = Vec::new();
        rust_files(&root().join(dir), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(!text.contains(foreign), "{} uses {foreign}", file.display());
        }
    }
}

#[test]
fn the_agents_modules_form_no_cycle() {
    let graph = module_graph(&root().join("src"));
    assert!(graph.len() > 8, "the agent's modules were found: {graph:?}");
    assert_eq!(find_cycle(&graph), None);
}

/// A path that comes back to where it started, if the graph has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    for start in graph.keys() {
        let mut stack: Vec<Vec<&String>> = vec![vec![start]];
        while let Some(path) = stack.pop() {
            let last = path[path.len() - 1];
            for next in graph.get(last).into_iter().flatten() {
                if next == start {
                    return Some(path.iter().map(|m| m.to_string()).chain([next.clone()]).collect());
                }
                if !path.contains(&next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push(longer);
                }
            }
        }
    }
    None
}

/// Top-level module → the top-level modules its code (not its tests) names with `crate::`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap().flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let module = entry.file_name().to_string_lossy().into_owned();
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        let uses = graph.entry(module.clone()).or_default();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !name.is_empty() && name != module && src.join(&name).is_dir() {
                    uses.insert(name);
                }
            }
            assert!(
                !code.contains("crate::{"),
                "{}: name modules one per path, so this test sees them",
                file.display()
            );
        }
    }
    graph
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    // The check itself, on a tree made for it: a → b → a.
    let dir = tempfile::tempdir().unwrap();
    for (module, uses) in [("a", "crate::b::x"), ("b", "crate::a::y"), ("c", "crate::a::z")] {
        std::fs::create_dir(dir.path().join(module)).unwrap();
        std::fs::write(dir.path().join(module).join("mod.rs"), format!("fn f() {{ {uses}(); }}")).unwrap();
    }
    let graph = module_graph(dir.path());
    assert_eq!(graph["a"], BTreeSet::from(["b".to_string()]));
    assert_eq!(graph["c"], BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&graph), Some(vec!["a".to_string(), "b".to_string(), "a".to_string()]));
    let mut acyclic = graph.clone();
    acyclic.get_mut("b").unwrap().clear();
    assert_eq!(find_cycle(&acyclic), None);
}
