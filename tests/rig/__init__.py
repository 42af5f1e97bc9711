"""The test rig of shared/TESTING.md: namespaces, daemons and helpers shared by the tests, the
compat tests and the benchmarks, none of which may reach beyond the machine's loopback.

The common names are here (``from tests.rig import Outer, start_ready, ...``); the modules:

* ``namespaces``: ``Outer``, ``Guest``, ``Remote``, ``User``, ``Daemon``, ``Background`` and
  ``start_ready``, the one way to spawn a daemon and wait for its ready fd.
* ``programs``: the binaries a scenario runs against, the tests/tools/ scripts and a one-shot
  client of the daemon's JSON API socket.
* ``fixtures``: the pytest fixtures over all this (imported by the conftest files).
* ``frames``: guest frames built by hand, and an independent checksum.
* ``clients``: sandboxed podman and rootlesskit runs (tests/integration/test_clients.py).
* ``scapy_tools``: crafted frames and a host-loopback hit counter; also run as a script by path
  inside the namespaces, so it imports nothing from the package.
"""

from .namespaces import (
    HARDENED,
    NO_SUCH_PID,
    READY_TIMEOUT,
    REFERENCE,
    TEST_USER,
    Background,
    Daemon,
    Guest,
    NotReady,
    Outer,
    Remote,
    User,
    binary,
    end_process,
    is_reference,
    link_details,
    ns_id,
    read_ready,
    start_ready,
    wait_until,
)
from .programs import (
    CHECKOUT,
    PROGRAMS,
    REFERENCE_PARAM,
    SLAAC_WAIT,
    TCP_TOOL,
    TOOLS,
    UDP_CLIENT,
    UDP_SERVER,
    add_hostfwd,
    api_request,
    ask,
    fd_count,
    read_all,
    rss_kib,
    status_kib,
    stream_digest,
)

__all__ = [
    "CHECKOUT",
    "HARDENED",
    "NO_SUCH_PID",
    "PROGRAMS",
    "READY_TIMEOUT",
    "REFERENCE",
    "REFERENCE_PARAM",
    "SLAAC_WAIT",
    "TCP_TOOL",
    "TEST_USER",
    "TOOLS",
    "UDP_CLIENT",
    "UDP_SERVER",
    "Background",
    "Daemon",
    "Guest",
    "NotReady",
    "Outer",
    "Remote",
    "User",
    "add_hostfwd",
    "api_request",
    "ask",
    "binary",
    "end_process",
    "fd_count",
    "is_reference",
    "link_details",
    "ns_id",
    "read_all",
    "read_ready",
    "rss_kib",
    "start_ready",
    "status_kib",
    "stream_digest",
    "wait_until",
]
