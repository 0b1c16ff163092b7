# %systemd_preun: on removal (not upgrade) stop and disable both services.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now redtether.service redtether-hub.service >/dev/null 2>&1 || :
    else
        rm -f /etc/systemd/system/multi-user.target.wants/redtether.service /etc/systemd/system/multi-user.target.wants/redtether-hub.service
    fi
fi
exit 0
