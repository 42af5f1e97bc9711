"""The shell: every fd, the clock, signals and the one event loop; no protocol logic.

Module map:

  startup     start-up (contract order): fds, the join child, banner, ready byte
  daemon      the loop, and carrying out the core's requests
  reactor     epoll and the fd -> handler table
  tap         open or attach the tap with offloads; batched frame reads and writev
  bess        --target-type=bess: the SOCK_SEQPACKET listener whose client stands for the tap
  streams     host sockets behind the core's TCP streams
  datagrams   host sockets behind the core's UDP and ping flows
  forwards    port forwards' listeners: accepted clients become flows toward the guest
  splice      --port-forward-mode=splice: TCP forwards joined inside the namespace by splice(2)
  apiserver   the API socket and its clients (owns every listening socket but BESS's)
  sockfile    a bound socket file, removed at exit through its directory fd
  netns       the forked child that joins the target's namespaces and opens the tap
  configure   -c: addresses, routes and links inside the target, through pyroute2
  resolv      the resolv.conf watcher behind the DNS alias
  heap        the C heap kept while traffic flows and trimmed once the loop idles
  sandbox     --enable-sandbox: an empty root with /etc and /run, one capability left
  seccomp     --enable-seccomp: the syscall allow-list, through libseccomp
  observe     the tap port of --pcap/--stats/--debug: every frame counted and captured
  pcap        --pcap: the buffered, size-bounded pcap file writer
  faults      a test-only fault injector at the tap boundary
  errors      slirp4netns-worded stderr lines and the start-up error
  run         `pyslirp4netns run -- CMD`: a namespace of its own, the daemon, CMD's status
"""
