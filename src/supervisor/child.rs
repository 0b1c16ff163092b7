//! Starting and stopping the Node-RED process: its own process group, a parent-death signal,
//! and group-wide termination so nothing it started outlives it.

use super::launch::{ENV_REMOVED, LaunchSpec};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// A running Node-RED, leader of its own process group.
#[derive(Debug)]
pub struct NodeRedProcess {
    child: Child,
    pid: u32,
}

/// The output pipes of a started process, handed to the log forwarders.
pub struct Pipes {
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

impl NodeRedProcess {
    /// Starts the process described by `spec`.
    pub fn spawn(spec: &LaunchSpec) -> std::io::Result<(NodeRedProcess, Pipes)> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: signals go to Node-RED and everything it started, and a Ctrl-C in
            // the agent's terminal reaches only the agent, which then stops Node-RED in order.
            .process_group(0)
            .kill_on_drop(true);
        for name in ENV_REMOVED {
            cmd.env_remove(name);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        set_parent_death_signal(&mut cmd);
        let mut child = cmd.spawn()?;
        let pid = child.id().ok_or_else(|| std::io::Error::other("child exited before its pid was read"))?;
        let pipes = Pipes { stdout: child.stdout.take(), stderr: child.stderr.take() };
        Ok((NodeRedProcess { child, pid }, pipes))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the leader to exit, then ends whatever is left of its group.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        signal_group(self.pid, Signal::SIGKILL);
        status
    }

    /// SIGTERM to the group, SIGKILL after `timeout`; returns the leader's exit status.
    pub async fn stop(&mut self, timeout: Duration) -> std::io::Result<ExitStatus> {
        signal_group(self.pid, Signal::SIGTERM);
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => {
                signal_group(self.pid, Signal::SIGKILL);
                status
            }
            Err(_) => {
                tracing::warn!(pid = self.pid, timeout = %humantime::format_duration(timeout), "Node-RED did not stop in time; killing its process group");
                signal_group(self.pid, Signal::SIGKILL);
                self.child.wait().await
            }
        }
    }
}

/// Sends `signal` to the process group led by `pid`; a group that is already gone is fine.
pub fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pid, %signal, error = %e, "could not signal Node-RED's process group")
        }
    }
}

/// Asks the kernel to SIGKILL the child when the agent dies, even by SIGKILL, so Node-RED is
/// never left running unsupervised.
///
/// The signal is tied to the thread that forked: children are spawned from tokio worker
/// threads, which live as long as the runtime (the agent never uses `block_in_place`).
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2) and
    // getppid(2), which are async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The agent may have died between fork and prctl; then nobody would ever send it.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("agent exited while Node-RED was starting"));
            }
            Ok(())
        });
    }
}
