# The system users (redtether for the agent and Node-RED, redtether-hub for the hub), from the
# package's sysusers.d file; without systemd-sysusers, the same with shadow-utils.
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers /usr/lib/sysusers.d/redtether.conf || :
else
    getent group redtether >/dev/null || groupadd --system redtether
    getent passwd redtether >/dev/null || useradd --system --gid redtether --home-dir /nonexistent --no-create-home --shell /sbin/nologin --comment "redtether agent" redtether
    getent passwd redtether-hub >/dev/null || useradd --system --gid redtether --home-dir /nonexistent --no-create-home --shell /sbin/nologin --comment "redtether hub" redtether-hub
fi
# The services read their configuration as these users; not for everyone.
chown root:redtether /etc/redtether /etc/redtether/agent.toml
chmod 0750 /etc/redtether
chmod 0640 /etc/redtether/agent.toml
# What %systemd_post does (cargo-generate-rpm does not expand macros): on first install, apply
# the presets (80-redtether.preset enables the agent, not the hub); never start anything here.
# `preset` works without a running systemd too (containers, image builds).
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset redtether.service redtether-hub.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
exit 0
