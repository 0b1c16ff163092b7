# %systemd_postun_with_restart: reload after any change; on an upgrade restart what runs, so the
# new binaries are in use (as the .deb does). RPM has no purge: the state in /var/lib/redtether
# and /var/lib/redtether-hub is kept (remove it by hand if the device is retired).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart redtether.service redtether-hub.service >/dev/null 2>&1 || :
    fi
fi
exit 0
