"""resolv.conf: first server per family, re-read on change at most once a second, stub lifted."""

from __future__ import annotations

import os
from ipaddress import ip_address
from pathlib import Path

from pyslirp4netns.shell.resolv import ResolvConf, nameservers_from


def test_first_server_of_each_family(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver 192.0.2.2\n")
    servers = nameservers_from(str(conf), str(tmp_path / "none"))
    assert servers.v4 == ip_address("192.0.2.1").packed
    assert servers.v6 == ip_address("2001:db8::1").packed


def test_systemd_stub_is_replaced_by_its_upstream(tmp_path: Path) -> None:
    conf, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    conf.write_text("nameserver 127.0.0.53\noptions edns0\n")
    upstream.write_text("nameserver 198.51.100.53\n")
    assert nameservers_from(str(conf), str(upstream)).v4 == ip_address("198.51.100.53").packed
    # without an upstream list the stub stays (it may be reachable where we run)
    assert nameservers_from(str(conf), str(tmp_path / "none")).v4 == ip_address("127.0.0.53").packed


def test_missing_file_means_no_servers(tmp_path: Path) -> None:
    servers = nameservers_from(str(tmp_path / "none"))
    assert (servers.v4, servers.v6) == (None, None)


def test_change_is_seen_within_a_second(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.1\n")
    watcher = ResolvConf(str(conf), str(tmp_path / "none"))
    assert watcher.current(100.0).v4 == ip_address("192.0.2.1").packed
    conf.write_text("nameserver 192.0.2.99\n")
    os.utime(conf, ns=(0, 10**18))  # a distinct mtime even on coarse clocks
    assert watcher.current(100.5).v4 == ip_address("192.0.2.1").packed  # not re-checked yet
    assert watcher.current(101.0).v4 == ip_address("192.0.2.99").packed
