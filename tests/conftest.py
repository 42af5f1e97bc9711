from tests.rig.fixtures import (  # noqa: F401
    api_dir,
    api_path,
    background,
    make_daemon,
    make_guest,
    outer,
    pipes,
    slirp,
    unpriv,
)
