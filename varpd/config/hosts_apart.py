"""Parse a big hosts.json in a child process: the daemon gets the records, never the JSON.

`load_hosts_apart` runs ``python -m varpd.config.hosts_apart PATH MAX_SIZE``, which reads and
validates the file with the very code of an in-process load (`varpd.config.hosts.load_hosts`:
the same checks, the same one-line errors naming file, line, MAC and field) and writes the
result packed (varpd.model.packed) to its stdout.  The parent reads it into one buffer and
builds the records from it.  Measured at a million records: the in-process parse left the
daemon 415 MB larger after malloc_trim (the json tree's and the dicts' garbage scattered
between the records), records built from the packed form 339 MB; the peak of the parse
(the 150 MB text, its tree) is the child's, which exits; and the parse runs on another core
instead of holding the GIL against the event loop.

A refused file: the child prints the ConfigError's line on stderr and exits 2, the parent raises
the same ConfigError.  A child that dies otherwise (killed, out of memory) is a ConfigError
naming the file and how the parser ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from varpd.backend.errors import ConfigError
from varpd.model import Mapping
from varpd.model.packed import HEADER, PackError, body_size, unpack
from varpd.nogc import collector_paused

__all__ = ["load_hosts_apart"]

REFUSED = 2  # the child's exit status for a file it refused (its stderr is the one line)


def load_hosts_apart(path: str | Path, max_size: int,
                     previous: Mapping | None = None) -> tuple[tuple[int, int, int], Mapping]:
    """(the stamp (st_ino, st_mtime_ns, st_size) of the very file read, its Mapping), parsed by a
    child process; records equal to those of `previous` are shared with it.  Blocking: call it
    from a worker thread."""
    proc = subprocess.Popen(_command(path, max_size), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        data = _read_packed(proc.stdout)
        err = proc.stderr.read()
    finally:
        proc.stdout.close()
        proc.stderr.close()
        status = proc.wait()
    if status == REFUSED:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        raise ConfigError(lines[-1] if lines else f"{path}: refused by the parser process")
    if status != 0 or data is None:
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise ConfigError(f"{path}: the parser process failed ({how}) {tail[0]}".rstrip())
    try:
        with collector_paused():  # a million new records: the cyclic GC would rescan them again and again
            return unpack(data, previous)
    except PackError as exc:
        raise ConfigError(f"{path}: the parser process's output is unreadable: {exc}") from None


def _command(path: str | Path, max_size: int) -> list[str]:
    # -P: nothing of the working directory's shadows the installed varpd
    flags = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *flags, "-m", "varpd.config.hosts_apart", str(path), str(max_size)]


def _read_packed(stream) -> bytearray | None:
    """The header and body the child wrote, read into one buffer (no chunks to join); None when short."""
    head = stream.read(HEADER.size)
    try:
        size = HEADER.size + body_size(head)
    except PackError:
        return None
    buf = bytearray(size)
    buf[:HEADER.size] = head
    view = memoryview(buf)
    got = HEADER.size
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            return None
        got += n
    return buf


def _child(path: str, max_size: int) -> int:
    from varpd.config.hosts import parse_hosts
    from varpd.config.reading import read_text
    from varpd.model.packed import pack

    try:
        st, text = read_text(path, max_size)
        mapping = parse_hosts(text, path)
    except ConfigError as exc:
        print(str(exc).splitlines()[0] if str(exc) else f"{path}: refused", file=sys.stderr)
        return REFUSED
    except Exception as exc:  # one line, never a traceback that could fill the pipe the parent reads last
        print(f"{type(exc).__name__}: {exc}"[:500].replace("\n", " "), file=sys.stderr)
        return 1
    del text
    out = pack(mapping, (st.st_ino, st.st_mtime_ns, st.st_size))
    with os.fdopen(sys.stdout.fileno(), "wb", closefd=False) as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], int(sys.argv[2])))
