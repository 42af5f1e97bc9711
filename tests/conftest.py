from fixtures import make_daemon, make_guest, outer, pipes, slirp, unpriv  # noqa: F401
