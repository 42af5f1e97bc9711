"""What several integration tests share: the binaries a scenario runs against, the scripts of
tests/tools/ (run by path inside the namespaces), a wait for the guest's IPv6 address, and a
one-shot client of the JSON API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .namespaces import REFERENCE

CHECKOUT = Path(__file__).resolve().parents[2]
TOOLS = CHECKOUT / "tests" / "tools"
TCP_TOOL = [sys.executable, str(TOOLS / "tcp_tool.py")]
UDP_SERVER = [sys.executable, str(TOOLS / "udp_server.py")]
UDP_CLIENT = [sys.executable, str(TOOLS / "udp_client.py")]

REFERENCE_PARAM = pytest.param(
    [REFERENCE],
    id="slirp4netns",
    marks=pytest.mark.skipif(not os.path.exists(REFERENCE), reason="no reference"),
)
# The same scenario against ours (program None: the rig's default) and slirp4netns.
PROGRAMS = [pytest.param(None, id="pyslirp4netns"), REFERENCE_PARAM]

# Until tap0 has a usable (non-tentative) global IPv6 address from our Router Advertisement.
SLAAC_WAIT = (
    "for i in $(seq 100); do ip -6 addr show dev tap0 scope global | grep -q inet6 && "
    "! ip -6 addr show dev tap0 | grep -q tentative && exit 0; sleep 0.1; done; exit 1"
)


def stream_digest(size: int) -> str:
    """The SHA-256 of tcp_tool.py's first ``size`` bytes (what its senders send)."""
    out = subprocess.run(
        [*TCP_TOOL, "digest", "-", "--size", str(size)], capture_output=True, check=True, timeout=60
    )
    return out.stdout.decode().strip()


def status_kib(pid: int, field: str) -> int | None:
    """A size field of /proc/PID/status (``VmRSS``, ``VmHWM``...) in KiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB (None once it is gone)."""
    return status_kib(pid, "VmRSS")


def fd_count(pid: int) -> int | None:
    """How many fds ``pid`` has open (None once it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def read_all(sock: socket.socket) -> bytes:
    """Everything until EOF; a reset after the server's reply leaves what came before."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass  # closed with our bytes unread (e.g. too large message): the reply stands
    return data


def ask(path: str, request: bytes, half_close: bool = True, timeout: float = 5) -> bytes:
    """One raw request on the API socket at ``path``; the whole reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def api_request(path: str, request: dict[str, object]) -> bytes:
    """One request as podman sends it (JSON, newline, half-close)."""
    return ask(path, json.dumps(request).encode() + b"\n")


def add_hostfwd(
    path: str, proto: str, host: str, host_port: int, guest: str, guest_port: int
) -> int:
    """One ``add_hostfwd`` that must succeed; the new rule's id."""
    arguments = {
        "proto": proto,
        "host_addr": host,
        "host_port": host_port,
        "guest_addr": guest,
        "guest_port": guest_port,
    }
    reply = json.loads(api_request(path, {"execute": "add_hostfwd", "arguments": arguments}))
    assert "return" in reply, reply
    return int(reply["return"]["id"])
