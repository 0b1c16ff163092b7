//! Where the Node-RED that runs is installed, and which Node.js runs it, from the settings.

use crate::config::{NodeRedLaunch, Settings};
use std::path::{Component, Path, PathBuf};

/// Where to look, and what to tell the operator if Node-RED is not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRoot {
    /// The folder holding `node_modules/node-red`.
    pub dir: PathBuf,
    /// Managed by the agent (installed in `<state_dir>/runtime`), or given by `node_red.command`.
    pub managed: bool,
}

/// The install root of the Node-RED the settings run, or `None` when `node_red.command` names
/// no `…/node_modules/node-red/red.js` (not even through a symlink, as `/usr/bin/node-red` is).
pub fn install_root(settings: &Settings) -> Option<InstallRoot> {
    match &settings.node_red.launch {
        NodeRedLaunch::Managed { .. } => {
            Some(InstallRoot { dir: crate::state_dir::StateDir::new(&settings.state_dir).runtime_dir(), managed: true })
        }
        NodeRedLaunch::Command(command) => {
            let literal = command.iter().find_map(|arg| root_of_red_js(Path::new(arg)));
            let resolved =
                || command.iter().find_map(|arg| Path::new(arg).canonicalize().ok().and_then(|p| root_of_red_js(&p)));
            literal.or_else(resolved).map(|dir| InstallRoot { dir, managed: false })
        }
    }
}

/// `/srv/nr` for `/srv/nr/node_modules/node-red/red.js`; `None` for any other path.
pub fn root_of_red_js(path: &Path) -> Option<PathBuf> {
    let parts: Vec<Component> = path.components().collect();
    let n = parts.len();
    let tail = |i: usize| parts[n - i].as_os_str();
    if n < 3 || tail(1) != "red.js" || tail(2) != "node-red" || tail(3) != "node_modules" {
        return None;
    }
    let root: PathBuf = parts[..n - 3].iter().collect();
    Some(if root.as_os_str().is_empty() { PathBuf::from(".") } else { root })
}

/// The Node.js program that runs Node-RED: `node_red.node` when managed; with a command, its
/// program if that is a node binary (`node`, `nodejs`, `node20`, `/usr/local/bin/node`), else
/// `node` from the PATH, which is what a `#!/usr/bin/env node` script such as
/// `/usr/bin/node-red` runs.
pub fn node_program(settings: &Settings) -> String {
    match &settings.node_red.launch {
        NodeRedLaunch::Managed { node, .. } => node.clone(),
        NodeRedLaunch::Command(command) => {
            let program = &command[0];
            let name = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let is_node = name == "nodejs"
                || name.strip_prefix("node").is_some_and(|rest| {
                    rest.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-')
                        && !rest.starts_with('-')
                        && !rest.starts_with('.')
                });
            if is_node { program.clone() } else { "node".to_string() }
        }
    }
}

/// `20.20.2` from `node --version`'s `v20.20.2\n`; `None` for anything that is not a version.
pub fn parse_node_version(output: &str) -> Option<String> {
    let version = output.trim().strip_prefix('v')?;
    let mut parts = version.split('.');
    let numeric = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    (numeric(parts.next()) && numeric(parts.next()) && parts.next().is_some_and(|p| !p.is_empty()))
        .then(|| version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProcessContext, from_toml};

    fn settings(toml: &str) -> Settings {
        let ctx = ProcessContext { is_root: false, state_directory: None, cwd: PathBuf::from("/") };
        from_toml(toml, Path::new("/etc/redtether/agent.toml"), &ctx).unwrap()
    }

    #[test]
    fn red_js_paths_give_their_install_root() {
        assert_eq!(root_of_red_js(Path::new("/srv/nr/node_modules/node-red/red.js")), Some("/srv/nr".into()));
        assert_eq!(root_of_red_js(Path::new("node_modules/node-red/red.js")), Some(".".into()));
        assert_eq!(root_of_red_js(Path::new("/srv/nr/node_modules/node-red/lib/red.js")), None);
        assert_eq!(root_of_red_js(Path::new("/srv/nr/node-red/red.js")), None);
        assert_eq!(root_of_red_js(Path::new("red.js")), None);
        assert_eq!(root_of_red_js(Path::new("--safe")), None);
    }

    #[test]
    fn managed_node_red_is_in_the_runtime_folder() {
        let s = settings("state_dir = \"/var/lib/redtether\"\n");
        assert_eq!(install_root(&s), Some(InstallRoot { dir: "/var/lib/redtether/runtime".into(), managed: true }));
        assert_eq!(node_program(&s), "node");
        let s = settings("[node_red]\nnode = \"/opt/node/bin/node\"\n");
        assert_eq!(node_program(&s), "/opt/node/bin/node");
    }

    #[test]
    fn command_names_red_js() {
        let s = settings(
            "[node_red]\ncommand = [\"/usr/bin/node\", \"--inspect\", \"/srv/nr/node_modules/node-red/red.js\"]\n",
        );
        assert_eq!(install_root(&s), Some(InstallRoot { dir: "/srv/nr".into(), managed: false }));
        assert_eq!(node_program(&s), "/usr/bin/node");
    }

    #[test]
    fn command_through_a_symlink_to_red_js() {
        let dir = tempfile::tempdir().unwrap();
        let red_js = dir.path().join("lib/node_modules/node-red/red.js");
        std::fs::create_dir_all(red_js.parent().unwrap()).unwrap();
        std::fs::write(&red_js, "").unwrap();
        let bin = dir.path().join("node-red");
        std::os::unix::fs::symlink(&red_js, &bin).unwrap();
        let s = settings(&format!("[node_red]\ncommand = [{:?}]\n", bin.display().to_string()));
        let root = install_root(&s).unwrap();
        assert_eq!(root.dir, dir.path().canonicalize().unwrap().join("lib"));
        assert_eq!(node_program(&s), "node", "a node-red script runs the node on the PATH");
    }

    #[test]
    fn command_without_red_js_has_no_root() {
        let s = settings("[node_red]\ncommand = [\"/nonexistent/start-node-red.sh\", \"--safe\"]\n");
        assert_eq!(install_root(&s), None);
    }

    #[test]
    fn node_programs_are_recognised_by_name() {
        for (program, expected) in [
            ("node", "node"),
            ("nodejs", "nodejs"),
            ("/usr/local/bin/node20", "/usr/local/bin/node20"),
            ("node-red", "node"),
            ("/usr/bin/node-red-pi", "node"),
            ("nodemon", "node"),
            ("/bin/sh", "node"),
        ] {
            let s = settings(&format!("[node_red]\ncommand = [{program:?}, \"x\"]\n"));
            assert_eq!(node_program(&s), expected, "{program}");
        }
    }

    #[test]
    fn node_version_output() {
        assert_eq!(parse_node_version("v20.20.2\n").as_deref(), Some("20.20.2"));
        assert_eq!(parse_node_version("v22.0.0-nightly2024").as_deref(), Some("22.0.0-nightly2024"));
        assert_eq!(parse_node_version("20.20.2"), None);
        assert_eq!(parse_node_version("v20"), None);
        assert_eq!(parse_node_version("Welcome to Node.js"), None);
        assert_eq!(parse_node_version(""), None);
    }
}
