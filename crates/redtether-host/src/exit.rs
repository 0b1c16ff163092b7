//! Exit codes (sysexits.h where one fits), so systemd and scripts can tell causes apart.

use std::process::ExitCode;

pub const OK: u8 = 0;
pub const FAILURE: u8 = 1;
/// `status`: the agent is not running (as LSB `status` actions do).
pub const NOT_RUNNING: u8 = 3;
/// A service the command needs (the gate's port, the daemon) is unavailable.
pub const UNAVAILABLE: u8 = 69;
/// The state directory cannot be created or written.
pub const CANT_CREATE: u8 = 73;
/// Another agent holds the state directory: try again later.
pub const TEMP_FAIL: u8 = 75;
/// Bad configuration; the unit's `RestartPreventExitStatus=78` stops restarts on it.
pub const CONFIG: u8 = 78;

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
