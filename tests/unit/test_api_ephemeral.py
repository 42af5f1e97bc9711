"""``add_hostfwd`` with ``"host_port":0`` (issue 14, our extension): the pure API's part and the
server's, with a real bind on host loopback (binding only: no traffic)."""

from __future__ import annotations

import json
import socket

from pyslirp4netns.config import Config
from pyslirp4netns.core.api import ERR_GUEST_ADDR, ERR_HOST_PORT, AddHostfwd, Api
from pyslirp4netns.core.jsonreader import Reader
from pyslirp4netns.shell.apiserver import ApiServer

CONFIG = Config(target="1")
LIST = b'{"execute":"list_hostfwd"}'


def add(port: object, proto: str = "tcp", **fields: object) -> bytes:
    arguments = {"proto": proto, "host_addr": "127.0.0.1", "host_port": port, "guest_port": 80}
    arguments.update(fields)
    return json.dumps({"execute": "add_hostfwd", "arguments": arguments}).encode()


def test_exactly_zero_asks_for_an_ephemeral_port() -> None:
    api = Api(CONFIG)
    for zero in (b"0", b"0.0", b"-0", b"1e-999"):  # spellings of 0 parson reads
        request = b'{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":%s,' % zero
        command = api.handle(request + b'"guest_port":80}}')
        assert command == AddHostfwd("tcp", "0.0.0.0", 0, "10.0.2.100", 80, 4), zero
    # What the C cast turns into 0 but is not 0 stays slirp4netns's error; so does "missing".
    for bad in (0.5, -0.5, "0", None, False):
        assert api.handle(add(bad)) == ERR_HOST_PORT, bad
    assert api.handle(b'{"execute":"add_hostfwd","arguments":{"proto":"tcp"}}') == ERR_HOST_PORT
    # The checks after host_port still run in order.
    assert api.handle(add(0, guest_addr="x")) == ERR_GUEST_ADDR


def test_the_bound_port_is_the_rule_and_the_reply_names_it() -> None:
    api = Api(CONFIG)
    command = api.handle(add(0))
    assert isinstance(command, AddHostfwd)
    rule = api.rule(command, 40123)
    assert rule.host_port == 40123
    assert api.added(rule, ephemeral=True) == b'{"return":{"id":1,"host_port":40123}}'
    assert api.list_reply() == (
        b'{"entries":[{"id":1,"proto":"tcp","host_addr":"127.0.0.1","host_port":40123,'
        b'"guest_addr":"10.0.2.100","guest_port":80}]}'
    )
    # A fixed port ignores bound_port and is answered byte for byte as slirp4netns answers.
    fixed = api.handle(add(8080))
    assert isinstance(fixed, AddHostfwd)
    assert api.rule(fixed, 40124).host_port == 8080
    assert api.added(api.rule(fixed)) == b'{"return":{"id":2}}'


def _execute(server: ApiServer, request: bytes) -> bytes:
    reader = Reader()
    outcome = reader.feed(request) or reader.finish()
    return server._execute(outcome)


def test_server_binds_port_0_and_reports_what_the_kernel_chose() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        server = ApiServer(listener, Api(CONFIG), lambda fd, ev, cb: None, lambda fd: None)
        try:
            tcp = json.loads(_execute(server, add(0)))["return"]
            udp = json.loads(_execute(server, add(0, "udp")))["return"]
            assert (tcp["id"], udp["id"]) == (1, 2)
            for rule_id, reply in ((1, tcp), (2, udp)):
                sock = server.forwards[rule_id].sock
                assert sock.getsockname() == ("127.0.0.1", reply["host_port"])
                assert reply["host_port"] > 0
            listed = json.loads(_execute(server, LIST))["entries"]
            assert [e["host_port"] for e in listed] == [tcp["host_port"], udp["host_port"]]
        finally:
            server.close()
        assert server.forwards == {}
