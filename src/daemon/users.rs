//! The editor's users: those in the config, or — when none is configured — an `admin` owner
//! made on first run, whose password is written once to `<state_dir>/initial-admin-password`
//! (0600), so `redtether run` with no config still gives a working, locked editor.

use crate::config::{Role, UserSettings};
use crate::gate::auth::passwords::hash_random_secret;

use crate::state_dir::{StateDir, StateDirError, random_secret, write_private};

pub const INITIAL_ADMIN: &str = "admin";

pub fn effective_users(configured: &[UserSettings], dir: &StateDir) -> Result<Vec<UserSettings>, StateDirError> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
    }
    let hash_file = dir.root().join("initial-admin.phc");
    let password_file = dir.root().join("initial-admin-password");
    // The hash is kept so that later starts do not pay argon2 before READY.
    let hash = match std::fs::read_to_string(&hash_file) {
        Ok(hash) if !hash.trim().is_empty() => hash.trim().to_string(),
        _ => {
            // 96 random bits need no memory-hard hash to resist guessing; light parameters keep
            // the first start quick (READY) on a small device.
            let password = random_secret(12);
            let hash = hash_random_secret(&password)
                .map_err(|e| StateDirError::Io { path: hash_file.clone(), source: std::io::Error::other(e) })?;
            write_private(&password_file, format!("{password}\n").as_bytes())?;
            write_private(&hash_file, hash.as_bytes())?;
            tracing::warn!(
                user = INITIAL_ADMIN,
                password_file = %password_file.display(),
                "no users configured: created the editor user `admin` (owner); its password is in the password file. Configure [[gate.users]] to replace it"
            );
            hash
        }
    };
    Ok(vec![UserSettings { name: INITIAL_ADMIN.to_string(), password_hash: hash, role: Role::Owner }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_run_makes_an_owner_once_and_configured_users_win() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        let first = effective_users(&[], &sd).unwrap();
        assert_eq!((first[0].name.as_str(), first[0].role), ("admin", Role::Owner));
        let password = std::fs::read_to_string(dir.path().join("initial-admin-password")).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("initial-admin-password")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let second = effective_users(&[], &sd).unwrap();
        assert_eq!(first, second, "kept across starts");
        assert_eq!(std::fs::read_to_string(dir.path().join("initial-admin-password")).unwrap(), password);
        let configured = vec![UserSettings { name: "ann".into(), password_hash: "x".into(), role: Role::Viewer }];
        assert_eq!(effective_users(&configured, &sd).unwrap(), configured);
    }
}
