"""The sans-IO core: frames and facts in, frames and requests out; no fd, clock or randomness.

Module map (a frame from the tap goes down this list and its answers come back up):

  stack       Stack: the demux (Ethernet -> ARP/IPv4/IPv6 -> TCP/UDP/ICMP), the parts below, and
              what the shell gives and takes (receive_frame, flush, take_frames, take_requests,
              set_nameservers, next_deadline, on_timer)
  gateway     what the gateway answers itself: ARP, echo to its aliases, DHCP(v6), TFTP, NDP/RA
  dhcp, ndp   the DHCPv4 server's leases; NDP and router advertisement messages
  dhcpv6      the stateless DHCPv6 server: Information-request -> Reply with the DNS alias
  datagrams   UDP and ICMP echo flows through host sockets, and ICMP errors back to the guest
  streams     TCP flows through host sockets: the forwarder decision, timers, host I/O requests
  tcp         TcpConnection: every RFC 9293 state rule for one connection
  tcb         its base, the control block: variables, windows, queues, segments cut from them
  seq         sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4)
  sendbuffer  host bytes not yet acknowledged by the guest, kept as the host's own chunks
  sack        guest text that arrived out of order, and the SACK blocks that describe it
  rtt         the RFC 6298 round-trip estimator and retransmission timeout
  nat         the address policy every new flow goes through; datagram flow tables
  fragments   bounded IPv4 and IPv6 reassembly; IPv4 and IPv6 fragmentation
  neighbours  guest MACs learned from what it sends; frames held while we ask
  egress      every frame toward the guest: framing, fragmentation, GSO, ICMP unreachable
  events      the requests the core makes of the shell
  stats       get_stats's per-protocol counts, --debug's flow and drop lines
  api         the JSON API's commands, replies (slirp4netns's exact bytes) and rule table
  jsonreader  a resumable JSON reader that accepts what slirp4netns's parser accepts

Each module in ``pyslirp4netns.shell`` that does a part's I/O has the part's name
(``core/streams.py`` <-> ``shell/streams.py``, ``core/datagrams.py`` <-> ``shell/datagrams.py``).
``tests/unit/test_layers.py`` keeps this package free of I/O imports.
"""
