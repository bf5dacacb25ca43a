"""Reading files a user names (photos, configs, model files) without trusting what they are.

A path can name a FIFO (opening it blocks until a writer comes), a character device such
as /dev/zero (endless bytes) or a file larger than anything sensible. Every user-named file
is opened here non-blocking, checked to be a regular file on the open descriptor (no race
between the check and the read), and read with a byte cap, so no such path hangs the
process or eats its memory. Errors are the caller's StreamswapError subclass, one line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Sequence

from streamswap.errors import InputError, StreamswapError


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO (named pipe)", "a character device", …)."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 10 * 2**20 else f"{n / 2**20:.0f} MiB"


def check_regular(
    path: str | os.PathLike[str], what: str = "file", error: type[StreamswapError] = InputError
) -> os.stat_result:
    """stat() `path` (following links) and raise `error` unless it is a regular file."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{p}: {what} not found; check the path") from None
    except OSError as exc:
        raise error(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: is {kind_of(st.st_mode)}, not a regular file ({what}s must be regular files)")
    return st


def read_regular(
    path: str | os.PathLike[str], max_bytes: int, what: str = "file", error: type[StreamswapError] = InputError
) -> bytes:
    """The bytes of regular file `path`, at most `max_bytes` of them.

    Raises `error` when the path is missing, unreadable, not a regular file (FIFO, device,
    socket, folder) or larger than `max_bytes`; never blocks on a FIFO, never reads more
    than `max_bytes` + 1 bytes (a file that grows while being read is caught too)."""
    p = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{p}: {what} not found; check the path") from None
    except IsADirectoryError:
        raise error(f"{p}: is a folder, not a regular file ({what}s must be regular files)") from None
    except OSError as exc:
        try:  # a socket cannot be opened at all (ENXIO): say what it is
            mode = os.stat(p).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise error(f"{p}: is {kind_of(mode)}, not a regular file ({what}s must be regular files)") from None
        raise error(f"{p}: cannot read {what} ({exc.strerror or exc}); check its permissions") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{p}: is {kind_of(st.st_mode)}, not a regular file ({what}s must be regular files)")
        if st.st_size > max_bytes:
            raise error(f"{p}: {what} is {_mib(st.st_size)}, over the limit of {_mib(max_bytes)}")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise error(f"{p}: {what} grew past the limit of {_mib(max_bytes)} while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


# --- outputs: never destroy what the user has ---------------------------------------------

EXISTING_OUTPUT = ("auto", "refuse", "overwrite", "rename")


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: the same inode when both exist (hard links,
    symlinks, ../ spellings), else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_file(
    path: str | os.PathLike[str],
    existing: str,
    protect: Sequence[str | os.PathLike[str]] = (),
    *,
    error: type[StreamswapError] = StreamswapError,
    flag: str = "-y/--overwrite",
) -> None:
    """Raise `error` when writing `path` would destroy a file the run reads (any of
    `protect`: the input, the source photos; whatever `existing` says), or an existing
    file while `existing` is "refuse" (or "auto", which callers resolve to it)."""
    p = Path(path)
    for other in protect:
        if other and same_file(p, other):
            raise error(
                f"{p}: is also read by this run ({other}); writing it would destroy it, "
                "so write the result to another file"
            )
    if existing in ("refuse", "auto") and p.exists():
        try:
            mode = p.stat().st_mode
        except OSError:
            mode = stat.S_IFREG
        if stat.S_ISREG(mode):
            raise error(f"{p}: already exists; pass {flag} to replace it, or choose another name")


def move_aside(path: str | os.PathLike[str], now: float | None = None) -> Path | None:
    """Rename an existing regular file `path` to NAME.<UTC time>.EXT so that a new one can
    be written without losing it; returns the new name (None when there was nothing)."""
    import time

    p = Path(path)
    if not p.is_file():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    for n in range(1000):
        target = p.with_name(f"{p.stem}.{stamp}{f'-{n}' if n else ''}{p.suffix}")
        if not target.exists():
            os.rename(p, target)
            return target
    raise OSError(f"{p}: no free name to move it aside")
