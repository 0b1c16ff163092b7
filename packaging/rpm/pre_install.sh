# The users are made in %post, from the package's sysusers.d file (installed by then); the files
# this package installs are root's, so nothing needs them earlier.
exit 0
