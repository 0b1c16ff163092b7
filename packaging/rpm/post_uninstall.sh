# %systemd_postun: reload after removal. RPM has no purge: the state in /var/lib/redtether and
# /var/lib/redtether-hub is kept (remove it by hand if the device is retired).
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
exit 0
