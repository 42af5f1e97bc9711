"""slirp4netns-worded lines on stderr, and the one exception that ends start-up."""

from __future__ import annotations

import os
import sys


class StartupError(Exception):
    """A fatal start-up failure; ``str()`` is the exact line slirp4netns prints on stderr."""


def perror(what: str, err: int) -> StartupError:
    """slirp4netns's ``perror(what)`` wording: ``what: strerror``."""
    return StartupError(f"{what}: {os.strerror(err)}")


def log(line: str) -> None:
    """One line on stderr, unbuffered like slirp4netns's."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def do_slirp_failed(*lines: str) -> StartupError:
    """slirp4netns's tail of lines for a failure after the tap exists."""
    for line in lines:
        log(line)
    log("do_slirp is exiting")
    log("do_slirp failed")
    return StartupError("parent failed")
