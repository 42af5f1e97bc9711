"""Every header of ``wire/``, declared in construct: the specification of the codecs.

Each wire module holds its header's diagram and the ``Codec`` derived from the declaration
here (a ``struct`` format and field names, written out so that the daemon never imports
construct: about 7 MiB and 15 ms saved). ``tests/unit/test_wire_codec.py`` derives every codec
again from its declaration with ``codec.derive`` and checks that the two agree, and checks
parse/build against construct byte for byte.
"""

from __future__ import annotations

from construct import Bytes, Int8ub, Int8ul, Int16ub, Int16ul, Int32ub, Struct

# -- arp ---------------------------------------------------------------------------------------
ARP_PACKET = Struct(
    "htype" / Int16ub,
    "ptype" / Int16ub,
    "hlen" / Int8ub,
    "plen" / Int8ub,
    "oper" / Int16ub,
    "sha" / Bytes(6),
    "spa" / Bytes(4),
    "tha" / Bytes(6),
    "tpa" / Bytes(4),
)

# -- dhcp --------------------------------------------------------------------------------------
DHCP_HEADER = Struct(
    "op" / Int8ub,
    "htype" / Int8ub,
    "hlen" / Int8ub,
    "hops" / Int8ub,
    "xid" / Int32ub,
    "secs" / Int16ub,
    "flags" / Int16ub,
    "ciaddr" / Bytes(4),
    "yiaddr" / Bytes(4),
    "siaddr" / Bytes(4),
    "giaddr" / Bytes(4),
    "chaddr" / Bytes(16),
    "sname" / Bytes(64),
    "file" / Bytes(128),
    "magic_cookie" / Int32ub,
)

# -- dhcpv6 ------------------------------------------------------------------------------------
DHCPV6_HEADER = Struct(
    "msg_type_xid" / Int32ub,  # msg-type (8 bits), transaction-id (24 bits): masks
)
DHCPV6_OPTION = Struct(
    "code" / Int16ub,
    "length" / Int16ub,
)

# -- ethernet ----------------------------------------------------------------------------------
ETHERNET_HEADER = Struct(
    "dst" / Bytes(6),
    "src" / Bytes(6),
    "ethertype" / Int16ub,
)
VLAN_TAG = Struct(
    "tci" / Int16ub,
    "ethertype" / Int16ub,
)

# -- icmpv4 ------------------------------------------------------------------------------------
ICMPV4_HEADER = Struct(
    "type" / Int8ub,
    "code" / Int8ub,
    "checksum" / Int16ub,
    "rest" / Int32ub,
)

# -- icmpv6 ------------------------------------------------------------------------------------
ICMPV6_HEADER = Struct(
    "type" / Int8ub,
    "code" / Int8ub,
    "checksum" / Int16ub,
    "rest" / Int32ub,
)

# -- ipv4 --------------------------------------------------------------------------------------
IPV4_HEADER = Struct(
    "version_ihl" / Int8ub,
    "tos" / Int8ub,
    "total_length" / Int16ub,
    "identification" / Int16ub,
    "flags_fragment" / Int16ub,
    "ttl" / Int8ub,
    "protocol" / Int8ub,
    "checksum" / Int16ub,
    "src" / Bytes(4),
    "dst" / Bytes(4),
)

# -- ipv6 --------------------------------------------------------------------------------------
IPV6_HEADER = Struct(
    "version_class_flow" / Int32ub,
    "payload_length" / Int16ub,
    "next_header" / Int8ub,
    "hop_limit" / Int8ub,
    "src" / Bytes(16),
    "dst" / Bytes(16),
)
EXTENSION_HEADER = Struct(
    "next_header" / Int8ub,
    "hdr_ext_len" / Int8ub,
)
FRAGMENT_HEADER = Struct(
    "next_header" / Int8ub,
    "reserved" / Int8ub,
    "offset_flags" / Int16ub,
    "identification" / Int32ub,
)

# -- tcp ---------------------------------------------------------------------------------------
TCP_HEADER = Struct(
    "src_port" / Int16ub,
    "dst_port" / Int16ub,
    "seq" / Int32ub,
    "ack" / Int32ub,
    "data_offset" / Int8ub,
    "flags" / Int8ub,
    "window" / Int16ub,
    "checksum" / Int16ub,
    "urgent_pointer" / Int16ub,
)
MSS_OPTION = Struct("kind" / Int8ub, "length" / Int8ub, "mss" / Int16ub)
WINDOW_SCALE_OPTION = Struct("kind" / Int8ub, "length" / Int8ub, "shift" / Int8ub)
SACK_PERMITTED_OPTION = Struct("kind" / Int8ub, "length" / Int8ub)
TIMESTAMP_OPTION = Struct(
    "kind" / Int8ub, "length" / Int8ub, "ts_val" / Int32ub, "ts_ecr" / Int32ub
)
SACK_BLOCK = Struct("left" / Int32ub, "right" / Int32ub)

# -- udp ---------------------------------------------------------------------------------------
UDP_HEADER = Struct(
    "src_port" / Int16ub,
    "dst_port" / Int16ub,
    "length" / Int16ub,
    "checksum" / Int16ub,
)

# -- vnet --------------------------------------------------------------------------------------
VNET_HEADER = Struct(
    "flags" / Int8ul,
    "gso_type" / Int8ul,
    "hdr_len" / Int16ul,
    "gso_size" / Int16ul,
    "csum_start" / Int16ul,
    "csum_offset" / Int16ul,
)
