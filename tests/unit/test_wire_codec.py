"""The construct -> struct derivation and the Internet checksum (pyslirp4netns.wire.codec)."""

from __future__ import annotations

import importlib
from typing import Any

import construct
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyslirp4netns.wire import codec
from pyslirp4netns.wire.codec import (
    Codec,
    WireError,
    checksum,
    derive,
    ipv4_pseudo_sum,
    ipv6_pseudo_sum,
    ones_sum,
    udp_checksum_field,
)
from tests.rig.frames import reference_sum

MODULES = [
    "vnet",
    "ethernet",
    "arp",
    "ipv4",
    "ipv6",
    "icmpv4",
    "icmpv6",
    "udp",
    "tcp",
    "dhcp",
    "dhcpv6",
]


def all_codecs() -> list[Codec]:
    """Every Codec a wire module derives at import time."""
    found: dict[int, Codec] = {}
    for name in MODULES:
        module = importlib.import_module(f"pyslirp4netns.wire.{name}")
        for value in vars(module).values():
            if isinstance(value, Codec):
                found[id(value)] = value
    return list(found.values())


CODECS = all_codecs()


def field_strategy(con: Any) -> st.SearchStrategy[Any]:
    """Values a construct field accepts."""
    if isinstance(con, construct.Bytes):
        return st.binary(min_size=con.length, max_size=con.length)
    bits = con.length * 8
    if con.fmtstr[1].islower():  # signed
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


def values_strategy(c: Codec) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({sub.name: field_strategy(sub.subcon) for sub in c.spec.subcons})


def test_every_wire_module_derives_codecs() -> None:
    assert len(CODECS) >= 18
    assert {c.name for c in CODECS} >= {"VnetHeader", "Ipv4Header", "TcpHeader", "DhcpHeader"}


@pytest.mark.parametrize("c", CODECS, ids=lambda c: c.name)
def test_written_out_codec_is_what_its_construct_declaration_derives(c: Codec) -> None:
    """The declaration is the source of truth: the daemon's literal format and field names must
    be exactly what derive() makes of it, so editing one without the other fails here."""
    assert isinstance(c.declaration, str)  # named, so the daemon never imports construct
    derived = derive(c.name, c.spec)
    assert c.struct.format == derived.struct.format
    assert c.tuple._fields == derived.tuple._fields


def test_every_declaration_backs_exactly_one_codec() -> None:
    from pyslirp4netns.wire import declarations

    declared = {k for k, v in vars(declarations).items() if isinstance(v, construct.Struct)}
    assert sorted(c.declaration for c in CODECS) == sorted(declared)


def test_the_daemon_imports_neither_construct_nor_pyroute2_nor_psutil() -> None:
    """Footprint (issue 11): those stay in tests, the join child and --outbound-addr IFNAME."""
    import subprocess
    import sys

    probe = (
        "import sys, pyslirp4netns.shell.startup, pyslirp4netns.shell.daemon, pyslirp4netns.cli;"
        "print(sorted(m for m in ('construct', 'pyroute2', 'psutil') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("c", CODECS, ids=lambda c: c.name)
def test_codec_size_matches_construct(c: Codec) -> None:
    assert c.size == c.spec.sizeof()
    assert list(c.tuple._fields) == [sub.name for sub in c.spec.subcons]


@pytest.mark.parametrize("c", CODECS, ids=lambda c: c.name)
@given(data=st.data())
def test_codec_build_agrees_with_construct(c: Codec, data: st.DataObject) -> None:
    values = data.draw(values_strategy(c))
    assert c.pack(**values) == c.spec.build(values)
    buf = bytearray(c.size + 3)
    c.pack_into(buf, 3, *(values[sub.name] for sub in c.spec.subcons))
    assert bytes(buf[3:]) == c.spec.build(values)


@pytest.mark.parametrize("c", CODECS, ids=lambda c: c.name)
@given(data=st.data())
def test_codec_parse_agrees_with_construct(c: Codec, data: st.DataObject) -> None:
    raw = data.draw(st.binary(min_size=c.size, max_size=c.size))
    parsed = {k: v for k, v in c.spec.parse(raw).items() if not k.startswith("_")}
    assert c.unpack_from(raw)._asdict() == parsed
    assert c.unpack_from(memoryview(b"xy" + raw), 2)._asdict() == parsed
    assert c.values_from(raw) == tuple(parsed[sub.name] for sub in c.spec.subcons)


def test_vnet_codec_is_little_endian() -> None:
    from pyslirp4netns.wire import vnet

    assert vnet.VNET.struct.format == "<BBHHHH"
    assert vnet.VNET.size == 10


@pytest.mark.parametrize("offset", [-1, 0, 5])
def test_unpack_from_short_buffer_raises_wire_error(offset: int) -> None:
    c = derive("T", construct.Struct("a" / construct.Int16ub, "b" / construct.Bytes(3)))
    with pytest.raises(WireError):
        c.unpack_from(b"\x00" * 4, offset)
    with pytest.raises(WireError):
        c.values_from(memoryview(b"\x00" * 4), offset)


@pytest.mark.parametrize(
    "spec",
    [
        construct.Struct("a" / construct.Int24ub),
        construct.Struct("a" / construct.BytesInteger(3)),
        construct.Struct("n" / construct.Int8ub, "a" / construct.Bytes(construct.this.n)),
        construct.Struct("a" / construct.GreedyBytes),
        construct.Struct("a" / construct.Int16ub, "b" / construct.Int16ul),
        construct.Struct("a" / construct.Int16un),
        construct.Struct(construct.Padding(2)),
        construct.Sequence(construct.Int8ub),
    ],
)
def test_derive_rejects_unsupported_declarations(spec: Any) -> None:
    with pytest.raises(TypeError):
        derive("Bad", spec)


def test_derive_byte_order_follows_multibyte_fields() -> None:
    spec = construct.Struct("a" / construct.Int8ub, "b" / construct.Int32sl)
    assert derive("T", spec).struct.format == "<Bl"
    assert derive("T", construct.Struct("a" / construct.Bytes(2))).struct.format == ">2s"


# The Internet checksum, against a word-by-word RFC 1071 §4.1 loop written independently
# (tests.rig.frames.reference_sum).


@given(st.binary(max_size=300), st.integers(0, 0x3FFFF))
def test_ones_sum_matches_rfc1071_loop(data: bytes, initial: int) -> None:
    assert ones_sum(data, initial) == reference_sum(data, initial)
    assert checksum(data, initial) == (~reference_sum(data, initial)) & 0xFFFF
    assert checksum(memoryview(data), initial) == checksum(bytearray(data), initial)


def test_checksum_of_empty_and_all_zero_data_is_ffff() -> None:
    assert ones_sum(b"") == 0 and checksum(b"") == 0xFFFF
    assert ones_sum(bytes(64)) == 0 and checksum(bytes(64)) == 0xFFFF
    assert checksum(bytes(3)) == 0xFFFF


def test_checksum_of_data_summing_to_ffff_is_zero() -> None:
    assert checksum(b"\xff\xff") == 0
    assert checksum(b"\x12\x34\xed\xcb") == 0  # 0x1234 + 0xedcb == 0xffff
    # A sum that reaches a multiple of 0xffff by carries stays 0xffff ("negative zero").
    assert ones_sum(b"\xff\xff\xff\xff") == 0xFFFF
    assert ones_sum(b"\x80\x00\x7f\xff") == 0xFFFF


def test_checksum_odd_length_pads_a_zero_byte_on_the_right() -> None:
    assert ones_sum(b"\x01") == 0x0100
    assert ones_sum(b"\x01\x02\x03") == 0x0102 + 0x0300
    assert checksum(b"\xab\xcd\xef") == checksum(b"\xab\xcd\xef\x00")


def test_checksum_rfc1071_numerical_example() -> None:
    # RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_checksum_of_textbook_ipv4_header() -> None:
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(header) == 0xB861
    filled = header[:10] + b"\xb8\x61" + header[12:]
    assert checksum(filled) == 0


def test_checksum_initial_adds_like_a_prefix() -> None:
    prefix, data = b"\x45\x00\x12\x34", b"\xde\xad\xbe\xef\x01"
    assert checksum(data, ones_sum(prefix)) == checksum(prefix + data)


@given(
    st.binary(min_size=4, max_size=4),
    st.binary(min_size=4, max_size=4),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
)
def test_ipv4_pseudo_sum_matches_layout(src: bytes, dst: bytes, proto: int, length: int) -> None:
    pseudo = src + dst + bytes((0, proto)) + length.to_bytes(2, "big")  # RFC 768
    assert ipv4_pseudo_sum(src, dst, proto, length) == reference_sum(pseudo)


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 255),
    st.integers(0, 0xFFFFFFFF),
)
def test_ipv6_pseudo_sum_matches_layout(src: bytes, dst: bytes, nh: int, length: int) -> None:
    pseudo = src + dst + length.to_bytes(4, "big") + bytes((0, 0, 0, nh))  # RFC 8200 §8.1
    assert ipv6_pseudo_sum(src, dst, nh, length) == reference_sum(pseudo)


def test_udp_checksum_zero_is_sent_as_ffff() -> None:
    assert udp_checksum_field(0) == 0xFFFF
    assert udp_checksum_field(0x1234) == 0x1234
    assert udp_checksum_field(0xFFFF) == 0xFFFF


def test_codec_module_exports_wire_error_as_value_error() -> None:
    assert issubclass(codec.WireError, ValueError)
    from pyslirp4netns.wire import WireError as Exported

    assert Exported is WireError
