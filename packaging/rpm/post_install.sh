# The services read their configuration as the redtether user; not for everyone.
chown root:redtether /etc/redtether /etc/redtether/agent.toml
chmod 0750 /etc/redtether
chmod 0640 /etc/redtether/agent.toml
# What %systemd_post does (cargo-generate-rpm does not expand macros): on first install enable
# the agent, never start it here; harmless without a running systemd (containers, chroots).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then systemctl enable redtether.service >/dev/null 2>&1 || :; fi
elif [ "$1" -eq 1 ]; then
    mkdir -p /etc/systemd/system/multi-user.target.wants
    ln -sf /usr/lib/systemd/system/redtether.service /etc/systemd/system/multi-user.target.wants/redtether.service
fi
exit 0
