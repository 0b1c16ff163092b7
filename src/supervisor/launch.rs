//! The command line and environment Node-RED is started with. Pure, so it is tested without
//! starting anything.

use crate::config::{NodeRedLaunch, NodeRedSettings};
use std::path::Path;

/// Marks every process of one Node-RED run, so leftovers can be found and ended later even if
/// they left the process group.
pub const INSTANCE_ENV: &str = "REDTETHER_NODE_RED_INSTANCE";

/// Variables that belong to the agent, not to Node-RED: systemd would take a READY or WATCHDOG
/// sent by the child as ours, and socket-activation fds are not the child's.
pub const ENV_REMOVED: [&str; 6] =
    ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Variables set for the child, on top of the agent's environment minus [`ENV_REMOVED`].
    pub env: Vec<(String, String)>,
}

/// Builds the launch for one run. `red_js` is the installed entry point (managed mode);
/// `inherited_node_options` is the agent's own `NODE_OPTIONS`, kept when a heap limit is added.
pub fn launch_spec(
    settings: &NodeRedSettings,
    red_js: Option<&Path>,
    settings_file: &Path,
    user_dir: &Path,
    instance: &str,
    inherited_node_options: Option<&str>,
) -> LaunchSpec {
    let heap_flag =
        (settings.max_old_space_mb > 0).then(|| format!("--max-old-space-size={}", settings.max_old_space_mb));
    let node_red_args = [
        "--settings".to_string(),
        settings_file.display().to_string(),
        "--userDir".to_string(),
        user_dir.display().to_string(),
    ];
    let mut env: Vec<(String, String)> = settings.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.push((INSTANCE_ENV.to_string(), instance.to_string()));

    let (program, args) = match (&settings.launch, red_js) {
        (NodeRedLaunch::Command(cmd), _) => {
            // A command may be a wrapper script, so the heap limit travels in NODE_OPTIONS,
            // which every node it starts reads.
            if let Some(flag) = heap_flag {
                let options = match inherited_node_options.map(str::trim).filter(|s| !s.is_empty()) {
                    Some(existing) => format!("{existing} {flag}"),
                    None => flag,
                };
                env.push(("NODE_OPTIONS".to_string(), options));
            }
            let mut args: Vec<String> = cmd[1..].to_vec();
            args.extend(node_red_args);
            (cmd[0].clone(), args)
        }
        (NodeRedLaunch::Managed { node, .. }, red_js) => {
            let mut args: Vec<String> = heap_flag.into_iter().collect();
            args.push(red_js.map(|p| p.display().to_string()).unwrap_or_default());
            args.extend(node_red_args);
            (node.clone(), args)
        }
    };
    LaunchSpec { program, args, env }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProcessContext, from_toml};
    use std::path::PathBuf;

    fn node_red(toml: &str) -> NodeRedSettings {
        let ctx = ProcessContext { is_root: false, state_directory: None, cwd: PathBuf::from("/") };
        from_toml(toml, Path::new("/x.toml"), &ctx).unwrap().node_red
    }

    fn spec(toml: &str, node_options: Option<&str>) -> LaunchSpec {
        launch_spec(
            &node_red(toml),
            Some(Path::new("/s/runtime/node_modules/node-red/red.js")),
            Path::new("/s/node-red/settings.js"),
            Path::new("/s/node-red"),
            "run-1",
            node_options,
        )
    }

    #[test]
    fn managed_runs_node_with_heap_limit_then_red_js() {
        let s = spec("", None);
        assert_eq!(s.program, "node");
        assert_eq!(
            s.args,
            [
                "--max-old-space-size=256",
                "/s/runtime/node_modules/node-red/red.js",
                "--settings",
                "/s/node-red/settings.js",
                "--userDir",
                "/s/node-red"
            ]
        );
        assert!(s.env.contains(&(INSTANCE_ENV.to_string(), "run-1".to_string())));
    }

    #[test]
    fn zero_heap_limit_adds_no_flag() {
        let s = spec("[node_red]\nmax_old_space_mb = 0\n", None);
        assert_eq!(s.args[0], "/s/runtime/node_modules/node-red/red.js");
    }

    #[test]
    fn command_gets_settings_appended_and_heap_limit_in_node_options() {
        let s = spec(
            "[node_red]\ncommand = [\"/usr/bin/node-red\", \"--safe\"]\nenv = { TZ = \"UTC\" }\n",
            Some("--trace-warnings"),
        );
        assert_eq!(s.program, "/usr/bin/node-red");
        assert_eq!(s.args, ["--safe", "--settings", "/s/node-red/settings.js", "--userDir", "/s/node-red"]);
        assert!(s.env.contains(&("NODE_OPTIONS".into(), "--trace-warnings --max-old-space-size=256".into())));
        assert!(s.env.contains(&("TZ".into(), "UTC".into())));
    }
}
