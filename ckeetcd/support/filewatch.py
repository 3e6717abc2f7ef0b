"""Wake the loop when a file changes, without polling (Linux inotify via libc).

Watches the file's folder (editors and atomic writers replace the file, so a
watch on the file itself would go stale) and calls `on_change` for events
naming the file. Where inotify is unavailable, `start()` returns False and the
daemon keeps polling the file's mtime.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import struct
from collections.abc import Callable
from pathlib import Path

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
# Whole writes only: a close after writing, a rename into place, creation or
# removal. (IN_MODIFY would fire on the truncation that starts an in-place write.)
_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


class FileWatch:
    def __init__(self, path: Path, on_change: Callable[[], None]) -> None:
        self.path = path
        self.on_change = on_change
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> bool:
        """Begin watching; False when inotify cannot be used here."""
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                return False
            folder = str(self.path.resolve().parent).encode()
            if libc.inotify_add_watch(fd, folder, _MASK) < 0:
                os.close(fd)
                return False
        except (OSError, AttributeError):
            return False
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._read)
        return True

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        name = self.path.name.encode()
        offset = 0
        hit = False
        while offset + _HEADER.size <= len(data):
            _, _, _, length = _HEADER.unpack_from(data, offset)
            raw = data[offset + _HEADER.size: offset + _HEADER.size + length]
            hit = hit or raw.rstrip(b"\0") == name
            offset += _HEADER.size + length
        if hit:
            self.on_change()

    def stop(self) -> None:
        if self._fd >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
