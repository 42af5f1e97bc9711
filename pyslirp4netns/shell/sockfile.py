"""A socket file we bound: removed at exit, and only if it is still the one we made.

The removal goes through a directory fd opened at bind time, so it still works after
``--enable-sandbox``'s pivot_root has hidden the path (slirp4netns leaves the file behind then).
"""

from __future__ import annotations

import os
import stat


class SocketFile:
    def __init__(self, path: str) -> None:
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)
        directory, self._name = os.path.split(os.path.abspath(path))
        self._dir_fd: int | None = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def remove(self) -> None:
        """Unlink it unless someone else has since put their own file at the path."""
        if self._dir_fd is None:
            return
        name, fd, self._dir_fd = self._name, self._dir_fd, None
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._identity:
                os.unlink(name, dir_fd=fd)
        except OSError:
            pass
        finally:
            os.close(fd)
