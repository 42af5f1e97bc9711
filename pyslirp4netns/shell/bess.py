"""``--target-type=bess``: Ethernet frames over a SOCK_SEQPACKET unix socket instead of a tap.

User Mode Linux's vector driver (``vec0:transport=bess,dst=PATH``) connects to PATH and sends
one Ethernet frame per message, no virtio-net header. As slirp4netns (contract §4.1 step 3):
any file at PATH is replaced, ``Waiting for connection to PATH`` goes to stderr, start-up
blocks until the first client connects, and the accepted socket then stands where the tap fd
would (``sent "tapfd"=N (not really TAP) for PATH``, ``received tapfd=N``). Unlike slirp4netns,
which busy-loops once its one client has gone, the listener stays open: when a client
disconnects the next one is accepted, and frames toward the guest are dropped meanwhile.
"""

from __future__ import annotations

import errno
import os
import socket

from pyslirp4netns.shell.errors import StartupError, log, perror
from pyslirp4netns.shell.sockfile import SocketFile
from pyslirp4netns.shell.tap import Tap

UNIX_PATH_MAX = 108  # sun_path


class BessListener:
    """The listening socket at PATH; its file is removed at exit if it is still ours."""

    def __init__(self, path: str) -> None:
        if len(path.encode()) >= UNIX_PATH_MAX:
            log(f"the specified BESS socket path is too long (>= {UNIX_PATH_MAX})")
            raise StartupError("child failed(1)")
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            os.unlink(path)
        except OSError:
            pass  # bind reports the real problem
        try:
            self.sock.bind(path)
            self.sock.listen(1)
        except OSError as e:
            self.sock.close()
            log(str(perror("bind", e.errno or errno.EIO)))
            raise StartupError("child failed(1)") from None
        self.file = SocketFile(path)

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    def first_client(self) -> Tap:
        """Block until the first client connects; it is the "tap" from then on."""
        log(f"Waiting for connection to {self.path}")
        client = self.accept(blocking=True)
        assert client is not None
        log(f'sent "tapfd"={client} (not really TAP) for {self.path}')
        log(f"received tapfd={client}")
        return Tap(client, self.path, False, 0)

    def accept(self, blocking: bool = False) -> int | None:
        """A connected client's fd (non-blocking, close-on-exec), or None if none is waiting."""
        self.sock.setblocking(blocking)
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            log(f"WARNING: BESS accept: {os.strerror(e.errno or errno.EIO)}")
            return None
        conn.setblocking(False)
        return conn.detach()

    def close(self) -> None:
        self.sock.close()
        self.file.remove()
