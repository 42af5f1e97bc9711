"""``add_hostfwd`` with ``"host_port":0`` (issue 14, our extension): the daemon binds an
ephemeral port, reports it in the reply and lists it; traffic flows through it.

slirp4netns 1.2.0 refuses the request with the host_port error (compat/test_api_compat.py
asserts both sides)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.rig import TCP_TOOL, UDP_CLIENT, UDP_SERVER, Background, ask

pytestmark = pytest.mark.timeout(180)

EPHEMERAL_REPLY = re.compile(rb'\{"return":\{"id":(\d+),"host_port":(\d+)\}\}')


def add(proto: str, port: object, guest_port: int = 8080, **fields: object) -> bytes:
    arguments = {"proto": proto, "host_port": port, "guest_port": guest_port, **fields}
    return json.dumps({"execute": "add_hostfwd", "arguments": arguments}).encode()


def test_host_port_0_binds_an_ephemeral_port_reported_listed_and_forwarded(
    slirp, outer, api_dir: Path
) -> None:
    path = str(api_dir / "api.sock")
    guest, daemon = slirp(extra=["-a", path])
    started: list[Background] = []
    try:
        server = Background(
            outer.prefix() + guest.prefix(),
            [*TCP_TOOL, "serve", "whoami", "8080", "--bind", "0.0.0.0"],
        )
        started.append(server)
        reply = ask(path, add("tcp", 0, host_addr="127.0.0.1"))
        match = EPHEMERAL_REPLY.fullmatch(reply)
        assert match, reply
        rule_id, port = int(match[1]), int(match[2])
        assert rule_id == 1 and 1024 <= port <= 65535
        # The same port is what the host has listening, and what list_hostfwd says.
        listening = outer.run(["ss", "-Hltn", f"sport = :{port}"]).stdout.decode()
        assert f"127.0.0.1:{port}" in listening, listening
        listed = json.loads(ask(path, b'{"execute":"list_hostfwd"}'))["entries"]
        assert listed == [
            {
                "id": 1,
                "proto": "tcp",
                "host_addr": "127.0.0.1",
                "host_port": port,
                "guest_addr": "10.0.2.100",
                "guest_port": 8080,
            }
        ]
        seen = outer.run([*TCP_TOOL, "read", "127.0.0.1", str(port)]).stdout.decode().strip()
        assert seen == "10.0.2.2", daemon.stderr

        # UDP too: a second ephemeral port, carrying a datagram to a guest server and back.
        peer = Background(
            outer.prefix() + guest.prefix(), [*UDP_SERVER, "peer", "--bind", "0.0.0.0"]
        )
        started.append(peer)
        reply = ask(path, add("udp", 0, guest_port=int(peer.line)))
        match = EPHEMERAL_REPLY.fullmatch(reply)
        assert match and int(match[1]) == 2, reply
        udp_port = int(match[2])
        out = outer.run([*UDP_CLIENT, "once", "127.0.0.1", str(udp_port), "--timeout", "5"])
        assert out.stdout.decode().split()[0] == "10.0.2.2", out
        # A fixed port is still answered byte for byte as slirp4netns answers it.
        assert ask(path, add("tcp", 18099, host_addr="127.0.0.1")) == b'{"return":{"id":3}}'
        assert ask(path, add("tcp", 0.5)).startswith(b'{"error":')  # only exactly 0
        assert daemon.poll() is None
    finally:
        for process in started:
            process.close()
