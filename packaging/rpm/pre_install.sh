# The system user both services run as (state directories are made by systemd).
getent group redtether >/dev/null || groupadd --system redtether
getent passwd redtether >/dev/null || useradd --system --gid redtether --home-dir /nonexistent --no-create-home --shell /sbin/nologin --comment "redtether agent and hub" redtether
exit 0
