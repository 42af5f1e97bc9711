from fixtures import make_daemon, make_guest, outer, pipes, unpriv  # noqa: F401
