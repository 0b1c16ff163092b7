//! Finding and ending processes of an earlier Node-RED run that outlived it: children that left
//! the process group, or a whole tree left behind by an agent that was killed.

use super::launch::INSTANCE_ENV;
use std::fs;

/// Whether an environment block (`/proc/<pid>/environ`: `NAME=value` entries separated by NUL)
/// carries `INSTANCE_ENV=<instance>`.
pub fn environ_has_instance(environ: &[u8], instance: &str) -> bool {
    let wanted = format!("{INSTANCE_ENV}={instance}");
    environ.split(|&b| b == 0).any(|entry| entry == wanted.as_bytes())
}

/// SIGKILLs every process whose environment marks it as part of run `instance`; returns how
/// many were found. Processes we may not inspect are skipped.
pub fn kill_instance(instance: &str) -> usize {
    let own = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ_has_instance(&environ, instance)
            && let Ok(raw) = i32::try_from(pid)
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exact_instance_only() {
        let env = b"PATH=/bin\0REDTETHER_NODE_RED_INSTANCE=abc-1\0HOME=/\0";
        assert!(environ_has_instance(env, "abc-1"));
        assert!(!environ_has_instance(env, "abc"));
        assert!(!environ_has_instance(env, "abc-10"));
        assert!(!environ_has_instance(b"XREDTETHER_NODE_RED_INSTANCE=abc-1\0", "abc-1"));
    }

    #[test]
    fn kills_a_real_marked_process_and_spares_others() {
        let instance = format!("test-{}", crate::state_dir::random_secret(8));
        let mut marked = std::process::Command::new("sleep").arg("30").env(INSTANCE_ENV, &instance).spawn().unwrap();
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // Right after a vfork-style spawn returns, the kernel may not have set up the child's
        // environment yet; /proc shows it empty for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while fs::read(format!("/proc/{}/environ", marked.id())).unwrap_or_default().is_empty()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(kill_instance(&instance), 1);
        let status = marked.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
        assert!(other.try_wait().unwrap().is_none(), "unmarked process left alone");
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
