"""Reading one configuration or mapping file: a regular file, of bounded size, UTF-8.

A FIFO would block the reader forever (open() waits for a writer, read() for
end of file) and /dev/zero never ends; either took a daemon down.  The file is
opened without blocking, refused unless it is a regular file, and read up to
`max_size` + 1 bytes, so a file that grows while it is read is refused too.
Every refusal is a one-line ConfigError naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from varpd.backend.errors import ConfigError

__all__ = ["MiB", "read_text"]

MiB = 1024 * 1024


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n} bytes"


def read_text(path: str | Path, max_size: int) -> tuple[os.stat_result, str]:
    """(the stat of the very file read, its text); ConfigError naming `path` on any problem."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO, device or socket"
            raise ConfigError(f"{path}: not a regular file but {what}")
        if st.st_size > max_size:
            raise ConfigError(f"{path}: {_size(st.st_size)} is larger than the limit of {_size(max_size)}")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        chunks: list[bytes] = []
        total = 0
        want = st.st_size + 1  # one read for a file that keeps its size; what it grew by is read in MiBs
        try:
            while total <= max_size:
                chunk = f.read(min(want, max_size + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                want = MiB
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if len(data) > max_size:
        raise ConfigError(f"{path}: larger than the limit of {_size(max_size)}")
    try:
        return st, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
