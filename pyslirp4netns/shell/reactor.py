"""The one event loop's fd table: epoll and fd -> handler, level-triggered.

Raw ``select.epoll`` dispatch costs about 1 µs an event here, ``selectors`` twice that and an
asyncio callback more than three times: the data plane uses this directly. A handler gets the
event mask and returns a reason to stop the daemon, or None.
"""

from __future__ import annotations

import select
from collections.abc import Callable

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP

Handler = Callable[[int], str | None]
Watch = Callable[[int, int, Handler], None]


class Reactor:
    """fd -> handler over one epoll set."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.handlers: dict[int, Handler] = {}
        self._peak = 0  # most fds at once since the table was last rebuilt
        self.woke = False  # whether the last poll returned any event

    def watch(self, fd: int, events: int, handler: Handler) -> None:
        self.epoll.register(fd, events)
        self.handlers[fd] = handler
        if len(self.handlers) > self._peak:
            self._peak = len(self.handlers)

    def modify(self, fd: int, events: int) -> None:
        self.epoll.modify(fd, events)

    def unwatch(self, fd: int) -> None:
        self.handlers.pop(fd, None)
        try:
            self.epoll.unregister(fd)
        except OSError:
            pass

    def poll(self, timeout: float) -> str | None:
        """Wait up to ``timeout`` seconds (-1: forever) and run the handlers of ready fds."""
        reason = None
        handlers = self.handlers
        if self._peak > 4 * len(handlers) + 256:
            # A dict never shrinks as keys go: after a crowd of sockets, a right-sized copy
            # (here, between dispatches, where no handler holds the old one).
            handlers = self.handlers = dict(handlers)
            self._peak = len(handlers)
        ready = self.epoll.poll(timeout)
        self.woke = bool(ready)
        for fd, events in ready:
            handler = handlers.get(fd)
            if handler is not None:
                reason = handler(events) or reason
        return reason

    def close(self) -> None:
        self.epoll.close()
