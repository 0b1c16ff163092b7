//! The kinds of events: [`AuditKind`] for what a device records in its journal,
//! [`HubEventKind`] for what the hub records about a device. Recording an event means naming
//! one of these, so a new kind is a new variant, documented here and in docs/audit-events.md (a
//! test keeps the two in step). On disk, on the wire and in the API a kind is its dotted name.

/// An enum of event kinds with their dotted names, `as_str`, `parse`, `ALL`, `Display` and
/// serde as the name.
macro_rules! kinds {
    ($(#[$enum_doc:meta])* $name:ident { $( $(#[$doc:meta])* $variant:ident => $text:literal, )* }) => {
        $(#[$enum_doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$doc])* $variant, )*
        }

        impl $name {
            /// Every kind, in the order of docs/audit-events.md.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The dotted name, as stored and sent.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                }
            }

            /// The kind with this dotted name.
            pub fn parse(name: &str) -> Option<$name> {
                match name {
                    $( $text => Some($name::$variant), )*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = <String as serde::Deserialize>::deserialize(d)?;
                $name::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown event kind {name:?}")))
            }
        }
    };
}

kinds! {
    /// What a device records in its journal.
    AuditKind {
        /// The daemon started (its journal is open). Detail: `version`, `pid`.
        AgentStarted => "agent.started",
        /// The daemon is stopping on a signal. Detail: `signal`.
        AgentStopping => "agent.stopping",
        /// The configuration the daemon runs with. Detail: what it enables (protection, auth mode, users).
        ConfigLoaded => "config.loaded",
        /// Node-RED was started. Detail: `pid`, `port`.
        NodeRedStarted => "nodered.started",
        /// Node-RED exited or was stopped. Detail: how it ended.
        NodeRedExited => "nodered.exited",
        /// More crashes than allowed in the crash window.
        NodeRedCrashLoop => "nodered.crash_loop",
        /// A credential was refused (password, token, session, platform assertion).
        AuthFailed => "auth.failed",
        /// An editor login succeeded.
        AuthLogin => "auth.login",
        /// Failed authentications from one address were limited (once per window).
        AuthRateLimited => "auth.rate_limited",
        /// An authenticated caller was refused by role, protection mode or scope.
        AccessDenied => "access.denied",
        /// A write through the admin API was forwarded to Node-RED.
        AdminWrite => "admin.write",
        /// A bearer token was made.
        TokenCreated => "token.created",
        /// A bearer token was revoked.
        TokenRevoked => "token.revoked",
        /// The journal pruned events the platform had not acknowledged (bound reached).
        AuditDropped => "audit.dropped",
        /// The journal was set aside or could not be kept on disk; a new one begins here.
        AuditReset => "audit.reset",
        /// The journal could not persist for a while and is back: what it could not record
        /// meanwhile (failed logins with first and last time, refused actions, other events by kind).
        AuditGap => "audit.gap",
        /// The tunnel to the hub came up.
        TunnelConnected => "tunnel.connected",
        /// The tunnel to the hub went down. Detail: `reason`.
        TunnelDisconnected => "tunnel.disconnected",
        /// The hub refused the device's certificate (audited once per spell). Detail: `reason`.
        TunnelAuthFailed => "tunnel.auth_failed",
        /// The hub asked for something over the control stream. Detail: `command`.
        TunnelCommand => "tunnel.command",
        /// A malformed or unexpected frame from the hub closed the control stream. Detail: `code`, `message`.
        TunnelProtocolError => "tunnel.protocol_error",
        /// The device certificate was renewed. Detail: `serial`, `not_after`.
        TunnelRenewed => "tunnel.renewed",
        /// A renewal failed and will be retried. Detail: `reason`, `retry_in_secs`.
        TunnelRenewFailed => "tunnel.renew_failed",
        /// A signed deployment was accepted for applying.
        DeployReceived => "deploy.received",
        /// A deployment was applied and Node-RED runs it.
        DeployApplied => "deploy.applied",
        /// A deployment failed and the previous snapshot runs again.
        DeployRolledBack => "deploy.rolled_back",
        /// A deployment envelope was refused (signature, device, replay, expiry, content).
        DeployRefused => "deploy.refused",
        /// A platform policy is enforced from now on. Detail: `number`, `hash`, `changes`.
        PolicyApplied => "policy.applied",
        /// A platform policy was refused; the running settings stay. Detail: `number`, `hash`, `reason`.
        PolicyRefused => "policy.refused",
        /// `agent.toml` was read again (SIGHUP, `redtether reload`) and applied. Detail: `file`, `changes`, `needs_restart`.
        ConfigReloaded => "config.reloaded",
        /// A reload found `agent.toml` invalid; the running settings stay. Detail: `file`, `key`, `error`.
        ConfigReloadFailed => "config.reload_failed",
    }
}

kinds! {
    /// What the hub records about a device.
    HubEventKind {
        /// A device's tunnel came up. Detail: `addr`.
        DeviceConnected => "device.connected",
        /// A device's tunnel went down. Detail: `reason`.
        DeviceDisconnected => "device.disconnected",
        /// A malformed or unexpected frame from the device closed its control stream. Detail: `code`, `message`.
        ProtocolError => "protocol.error",
        /// A command went to the device. Detail: `id`, `command`.
        CommandSent => "command.sent",
        /// The device answered a command. Detail: `id`, `ok`, `detail`.
        CommandResult => "command.result",
        /// A deployment went to the device on its control stream. Detail: `deployment`, `number`.
        DeploymentSent => "deployment.sent",
        /// The device reported a deployment's state. Detail: `deployment`, `state`, `detail`.
        DeploymentStatus => "deployment.status",
        /// An operator made a deployment. Detail: `deployment`, `number`, `operator`, ...
        DeployCreated => "deploy.created",
        /// A snapshot of the device was kept at the hub. Detail: `snapshot`, `operator`.
        SnapshotTaken => "snapshot.taken",
        /// An operator asked the device for something through the API. Detail: `command`, `operator`.
        OperatorCommand => "operator.command",
        /// A write through the remote editor. Detail: `method`, `path`, `operator`, `status`.
        EditorWrite => "editor.write",
        /// The device enrolled. Detail: `serial`, `addr`.
        DeviceEnrolled => "device.enrolled",
        /// An enrollment was refused. Detail: `reason`, `addr`.
        EnrollRefused => "enroll.refused",
        /// The device's certificate was renewed. Detail: `serial`, `not_after`.
        DeviceRenewed => "device.renewed",
        /// The device's certificate was revoked. Detail: `serial`.
        DeviceRevoked => "device.revoked",
        /// An enrollment token was made for the device. Detail: `expires_in`.
        EnrollTokenCreated => "enroll_token.created",
        /// An operator set the device's policy. Detail: `number`, `operator`, `changes` (names and values, never hashes).
        PolicyChanged => "policy.changed",
        /// A policy went to the device on its control stream. Detail: `number`.
        PolicySent => "policy.sent",
        /// The device answered a policy. Detail: `number`, `state`, `reason`.
        PolicyStatus => "policy.status",
        /// An operator made a bearer token: for a device (target: the device; detail `name`,
        /// `expires`, `scope`, `operator`) or an API token of their own (target `operator:<name>`;
        /// detail `name`, `expires`, `scope`).
        TokenCreated => "token.created",
        /// A bearer token was revoked: a device's (detail `name`, `operator`) or an operator's
        /// API token (target `operator:<name>`; detail `name`).
        TokenRevoked => "token.revoked",
        /// An operator account was made. Detail: `role`, `email`, `with_token`.
        OperatorAdded => "operator.added",
        /// An operator account was removed (its sessions and tokens end with it). Detail: `role`.
        OperatorRemoved => "operator.removed",
        /// An operator's role changed (their sessions end). Detail: `from`, `to`.
        OperatorRoleChanged => "operator.role_changed",
        /// An operator set their password with their setup code. Detail: `second_factor`.
        OperatorPasswordSet => "operator.password_set",
        /// An operator enrolled TOTP (and got new recovery codes). Detail: `replaced` when a
        /// logged-in operator replaced their authenticator.
        Operator2faEnrolled => "operator.2fa_enrolled",
        /// A logged-in operator made new recovery codes (the old ones end). Detail: `count`.
        OperatorRecoveryCodesRenewed => "operator.recovery_codes_renewed",
        /// An operator's TOTP and recovery codes were cleared; they get a new setup code.
        Operator2faReset => "operator.2fa_reset",
        /// A login succeeded. Detail: `method` (`password`, `oidc`, `ldap`), `second_factor`, `addr`.
        OperatorLogin => "operator.login",
        /// A login failed. Detail: `reason`, `addr` (never the password or the code).
        OperatorLoginFailed => "operator.login_failed",
        /// Failed logins or token checks from one address or for one account were limited:
        /// one event per burst. Detail: `addr` or `account`, `retry_after_secs`.
        OperatorLoginLimited => "operator.login_limited",
        /// An operator logged out.
        OperatorLogout => "operator.logout",
        /// An operator made a device group. Target `group:<name>`. Detail: `description`.
        GroupCreated => "group.created",
        /// Devices joined or left a group. Target `group:<name>`. Detail: `added`, `removed`
        /// (device ids), `moved_from` (device → its previous group).
        GroupDevicesChanged => "group.devices_changed",
        /// An empty group was deleted. Target `group:<name>`.
        GroupDeleted => "group.deleted",
        /// A group's policy was set; each member without its own policy gets it. Target
        /// `group:<name>`. Detail: `devices` (how many got a new policy), `overridden` (ids of
        /// members whose own policy wins).
        GroupPolicyChanged => "group.policy_changed",
        /// A rollout to a group began. Target `group:<name>`. Detail: `rollout`, `snapshot`,
        /// `flows_hash`, `plan`, `devices`, `pipeline` (when a promotion started it).
        RolloutStarted => "rollout.started",
        /// A rollout's stage finished and the next began. Target `group:<name>`. Detail:
        /// `rollout`, `wave` (0 is the canary), `devices`, `applied`, `failed`, `skipped`.
        RolloutWave => "rollout.wave",
        /// A rollout stopped itself: more devices failed than its plan allows. Target
        /// `group:<name>`. Detail: `rollout`, `reasons`, `on_halt`, `reverting` (device ids).
        RolloutHalted => "rollout.halted",
        /// Every device of a rollout was dealt with. Target `group:<name>`. Detail: `rollout`,
        /// `applied`, `failed`, `skipped`.
        RolloutCompleted => "rollout.completed",
        /// An operator stopped a rollout where it stood. Target `group:<name>`. Detail: `rollout`.
        RolloutAborted => "rollout.aborted",
        /// An operator paused a rollout. Target `group:<name>`. Detail: `rollout`.
        RolloutPaused => "rollout.paused",
        /// An operator resumed a paused rollout. Target `group:<name>`. Detail: `rollout`.
        RolloutResumed => "rollout.resumed",
        /// A pipeline was made. Target `pipeline:<name>`. Detail: `stages`.
        PipelineCreated => "pipeline.created",
        /// A pipeline was deleted. Target `pipeline:<name>`.
        PipelineDeleted => "pipeline.deleted",
        /// A snapshot was promoted to a pipeline's next stage. Target `pipeline:<name>`.
        /// Detail: `from`, `to`, `snapshot`, `rollout`.
        PipelinePromoted => "pipeline.promoted",
        /// An alert reached a webhook (a 2xx answer). Target: the device, `group:<name>` or
        /// `hub`. Detail: `alert`, `status`, `key`, `id`, `webhook` (its name and origin, never
        /// its path, query or credentials), `attempts`, `http_status`.
        AlertSent => "alert.sent",
        /// An alert did not reach a webhook: every attempt failed, or it was dropped from a full
        /// queue. Detail as `alert.sent`, with `error` instead of `http_status`.
        AlertFailed => "alert.failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dotted_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for kind in AuditKind::ALL {
            let name = kind.as_str();
            assert!(name.contains('.') && name.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'));
            assert!(seen.insert(name), "{name} twice");
            assert_eq!(AuditKind::parse(name), Some(*kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
        assert_eq!(AuditKind::parse("format.disk"), None);
    }

    #[test]
    fn hub_kinds_too() {
        let mut seen = std::collections::HashSet::new();
        for kind in HubEventKind::ALL {
            assert!(seen.insert(kind.as_str()));
            assert_eq!(HubEventKind::parse(kind.as_str()), Some(*kind));
        }
    }

    #[test]
    fn every_kind_is_documented_in_docs_audit_events() {
        let doc = include_str!("../../../../docs/audit-events.md");
        let names = AuditKind::ALL.iter().map(|k| k.as_str()).chain(HubEventKind::ALL.iter().map(|k| k.as_str()));
        for name in names {
            assert!(doc.contains(&format!("`{name}`")), "{name} is not in docs/audit-events.md");
        }
    }
}
