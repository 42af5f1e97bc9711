from tests.rig.fixtures import api_dir, make_daemon, make_guest, outer, pipes, unpriv  # noqa: F401
