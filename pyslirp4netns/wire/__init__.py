"""Wire formats: one module per header, each declared once in construct (see ``codec``).

Decoders take ``bytes``/``memoryview`` plus an offset, check every length before use, and return a
small validated NamedTuple ("Repr") or raise ``WireError``. Addresses are ``bytes`` (4 or 16).
"""

from pyslirp4netns.wire.codec import WireError

__all__ = ["WireError"]
