//! The facts about the running process that choose defaults: who we run as and whether systemd
//! gave us a state directory. Gathered once, passed in, so validation stays pure.

use std::path::PathBuf;

/// Inputs to default selection, captured from the process (or made up by tests).
#[derive(Debug, Clone)]
pub struct ProcessContext {
    pub is_root: bool,
    /// `STATE_DIRECTORY` as systemd sets it for `StateDirectory=` (colon-separated; first wins).
    pub state_directory: Option<String>,
    pub cwd: PathBuf,
}

impl ProcessContext {
    pub fn from_process() -> Self {
        ProcessContext {
            is_root: nix::unistd::geteuid().is_root(),
            state_directory: std::env::var("STATE_DIRECTORY").ok().filter(|s| !s.is_empty()),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }

    /// The state directory of the program `name` when none is configured: systemd's
    /// `STATE_DIRECTORY`, else `/var/lib/<name>` for root, else `./<name>-state`.
    pub fn default_state_dir(&self, name: &str) -> PathBuf {
        if let Some(dirs) = &self.state_directory
            && let Some(first) = dirs.split(':').find(|d| !d.is_empty())
        {
            return PathBuf::from(first);
        }
        if self.is_root { PathBuf::from("/var/lib").join(name) } else { self.cwd.join(format!("{name}-state")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(is_root: bool, state_directory: Option<&str>) -> ProcessContext {
        ProcessContext { is_root, state_directory: state_directory.map(str::to_string), cwd: PathBuf::from("/home/pi") }
    }

    #[test]
    fn user_gets_a_folder_in_the_working_directory() {
        assert_eq!(ctx(false, None).default_state_dir("redtether"), PathBuf::from("/home/pi/redtether-state"));
    }

    #[test]
    fn each_program_has_its_own_default() {
        assert_eq!(ctx(true, None).default_state_dir("redtether-hub"), PathBuf::from("/var/lib/redtether-hub"));
        assert_eq!(ctx(false, None).default_state_dir("redtether-hub"), PathBuf::from("/home/pi/redtether-hub-state"));
    }

    #[test]
    fn root_gets_var_lib() {
        assert_eq!(ctx(true, None).default_state_dir("redtether"), PathBuf::from("/var/lib/redtether"));
    }

    #[test]
    fn systemd_state_directory_wins_and_first_entry_is_used() {
        assert_eq!(
            ctx(false, Some("/var/lib/rt:/var/lib/other")).default_state_dir("redtether"),
            PathBuf::from("/var/lib/rt")
        );
    }
}
