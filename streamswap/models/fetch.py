"""Download one model file: resumable, retried, verified, and only then moved into place.

The bytes land in `<file>.part` next to the final file. A transient failure (timeout, cut
connection, short body, HTTP 5xx/429) keeps the part and retries the same URL with
exponential back-off, resuming with an HTTP Range request. A wrong size or SHA-256 deletes
the part. Only a complete, verified file is renamed (atomically) to its final name, so no
outcome leaves a file under that name that a later load would accept.

URLs are tried in order: `<mirror>/<file>` when a mirror is configured, then the catalogue's.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from streamswap import __version__
from streamswap.errors import DownloadError, ModelError
from streamswap.inference.engine_cache import file_sha256
from streamswap.logs import kv
from streamswap.models.catalogue import ModelSpec
from streamswap.models.contracts import check_onnx_contract
from streamswap.models.progress import Progress
from streamswap.models.settings import ModelsSettings
from streamswap.redact import redact_uri

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# No model we know is larger (the biggest swappers are ~0.5 GB); the cap for a download
# whose catalogue entry gives no size.
MAX_MODEL_BYTES = 4 << 30
MIN_RATE = 1024  # bytes/s, averaged over models.timeout_s
MAX_BACKOFF_S = 60.0
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class FetchResult:
    """A file now in place under its final name."""

    path: Path
    sha256: str
    size: int
    url: str
    pinned: bool  # True: matched the catalogue's SHA-256; False: no hash is published


class _Transient(Exception):
    """Worth retrying the same URL (the part file is kept for resuming)."""


class _Permanent(Exception):
    """This URL will not work (404, DNS failure, ...): go to the next one."""


class _Mismatch(Exception):
    """The bytes are not the catalogue's file; the part has been deleted."""


class _Deadline(Exception):
    """models.deadline_s has passed: stop trying (the part is kept for a pinned file)."""


def candidate_urls(spec: ModelSpec, mirror: str | None) -> list[str]:
    """The URLs to try, in order: the configured mirror first, then the catalogue's."""
    urls: list[str] = []
    if mirror:
        if "://" not in mirror:  # a plain folder (USB stick, NFS share) on air-gapped sites
            mirror = Path(mirror).expanduser().absolute().as_uri()
        urls.append(f"{mirror.rstrip('/')}/{urllib.parse.quote(spec.file)}")
    urls.extend(u for u in spec.urls if u not in urls)
    return urls


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def fetch(
    spec: ModelSpec,
    dest_dir: Path,
    settings: ModelsSettings,
    *,
    progress: Progress | None = None,
    backoff_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Download `spec` into `dest_dir/spec.file`, verified, or raise DownloadError.

    `backoff_s` is the first retry delay (doubled per retry, at most a minute); tests
    pass a tiny value. A configured `settings.mirror` is tried before the catalogue URLs.
    """
    if spec.builtin:  # the store never asks: a mirror would be asked for a file named ""
        raise ModelError(f"{spec.name} is built in (code, no model file): there is nothing to download")
    urls = candidate_urls(spec, settings.mirror)
    if not urls:
        raise DownloadError(
            f"{spec.name} has no download URL and no mirror is set (--mirror, $STREAMSWAP_MODELS_MIRROR or models.mirror); "
            f"copy {spec.file} into {dest_dir} by hand"
        )
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create the models dir {dest_dir} ({exc.strerror}); set models.dir, "
            "--models-dir or $STREAMSWAP_MODELS_DIR to a writable folder"
        ) from None
    dest = dest_dir / spec.file
    part = part_path(dest)
    failures: list[str] = []
    deadline = time.monotonic() + settings.deadline_s
    with _exclusive(dest_dir / f".{spec.file}.lock"):
        for url in urls:
            try:
                return _fetch_from(spec, url, dest, part, settings, progress, backoff_s, sleep, deadline)
            except _Deadline:
                if spec.sha256 is None and part.exists():
                    part.unlink()
                kept = (
                    f"; the partial download ({part.stat().st_size} bytes) is kept and resumes next time"
                    if part.exists()
                    else ""
                )
                raise DownloadError(
                    f"downloading {spec.file} for {spec.name} did not finish within "
                    f"models.deadline_s ({settings.deadline_s:g} s) (last source: {_host(url)}){kept}; "
                    "use a faster mirror or raise models.deadline_s"
                ) from None
            except (_Permanent, _Transient, _Mismatch) as exc:
                failures.append(f"{_host(url)}: {exc}")
                log.warning("download source failed", extra=kv(model=spec.name, url=redact_uri(url), error=exc))
                if spec.sha256 is None and part.exists():
                    # Without a pinned hash, bytes from two hosts could never be told apart.
                    part.unlink()
    kept = (
        f"; the partial download {part} ({part.stat().st_size} bytes) is kept and resumes next time"
        if part.exists()
        else ""
    )
    raise DownloadError(
        f"could not download {spec.file} for {spec.name} ({'; '.join(failures)}){kept}; "
        f"check the network, set a mirror (--mirror, $STREAMSWAP_MODELS_MIRROR or models.mirror) to a reachable copy, or place the file at {dest}"
    )


def _fetch_from(
    spec: ModelSpec,
    url: str,
    dest: Path,
    part: Path,
    settings: ModelsSettings,
    progress: Progress | None,
    backoff_s: float,
    sleep: Callable[[float], None],
    deadline: float = float("inf"),
) -> FetchResult:
    """Try one URL with retries; a mismatch after resuming gets one fresh download."""
    attempt = 0
    fresh_retry_used = False
    while True:
        resumed = part.exists() and part.stat().st_size > 0
        try:
            _download(
                spec, url, part, min(settings.timeout_s, max(deadline - time.monotonic(), 0.1)), progress, deadline
            )
            return _verify_and_install(spec, url, part, dest)
        except _Mismatch:
            # A resumed part may hold another host's bytes or a stale copy: start over once.
            if resumed and not fresh_retry_used:
                fresh_retry_used = True
                log.warning("retrying from scratch", extra=kv(model=spec.name, url=redact_uri(url)))
                continue
            raise
        except _Transient as exc:
            attempt += 1
            if attempt > settings.retries:
                raise _Transient(f"{exc} (gave up after {attempt} attempts)") from None
            delay = min(backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
            if time.monotonic() + delay >= deadline:
                raise _Deadline() from None
            log.warning(
                "download interrupted, retrying",
                extra=kv(model=spec.name, error=exc, attempt=attempt, of=settings.retries, wait_s=delay),
            )
            sleep(delay)


def _download(
    spec: ModelSpec,
    url: str,
    part: Path,
    timeout_s: float,
    progress: Progress | None,
    deadline: float = float("inf"),
) -> None:
    """One HTTP request appending to `part`; raises _Transient/_Permanent/_Mismatch, or
    _Deadline past `deadline` (monotonic)."""
    if time.monotonic() >= deadline:
        raise _Deadline()
    have = part.stat().st_size if part.exists() else 0
    if spec.size is not None and have > spec.size:
        part.unlink()
        have = 0
    if spec.size is not None and have == spec.size:
        return  # complete from an earlier run; verification decides
    headers = {"User-Agent": f"streamswap/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            # The server says our part is already past its end: the part is not its file.
            part.unlink()
            raise _Transient("server rejected the resume range; restarting") from None
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise _Permanent(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if urllib.parse.urlsplit(url).scheme == "file":
            # A folder mirror either has the file or does not: no point retrying it.
            reason = getattr(exc.reason, "strerror", None) or exc.reason
            raise _Permanent(f"not in the mirror folder ({reason})") from None
        raise _classify_network_error(exc.reason) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _classify_network_error(exc) from None

    with response:
        status = getattr(response, "status", None) or 200
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if have and status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink()
                raise _Transient("server answered the resume with a wrong range; restarting")
            total = int(match.group(3)) if match.group(3) != "*" else None
        else:
            if have:
                log.info("server ignored the resume request; restarting", extra=kv(url=redact_uri(url)))
            have = 0
            total = length
        if total is None and length is not None:
            total = have + length
        if spec.size is not None and total is not None and total != spec.size:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise _Mismatch(
                f"the server offers {total} bytes but the catalogue's {spec.file} has {spec.size}: "
                "a different file; nothing kept"
            )
        # read1 returns what has arrived so far: a stall loses nothing already received.
        read = getattr(response, "read1", None) or response.read
        received = 0
        # Never more than the file can be: the catalogue's size, else any model's.
        limit = spec.size if spec.size is not None else MAX_MODEL_BYTES
        # A server that trickles (a byte now and then, so no read ever times out) is dropped
        # once a whole timeout_s window brings less than MIN_RATE bytes/s: retried, resuming.
        window_start, window_bytes = time.monotonic(), 0
        if progress is not None:
            progress.start(spec.file, total, have)
        ok = False
        try:
            try:
                out = open(part, "ab" if have else "wb")
            except OSError as exc:
                raise _write_error(part, exc) from None
            with out:
                while True:
                    try:
                        block = read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _classify_network_error(exc) from None
                    if not block:
                        break
                    if have + received + len(block) > limit:
                        out.close()
                        part.unlink()
                        what = (
                            f"the catalogue's {spec.file}"
                            if spec.size is not None
                            else "the largest model streamswap accepts"
                        )
                        raise _Mismatch(
                            f"the server sent more than {limit} bytes, the size of {what}: "
                            "a different file; nothing kept"
                        )
                    now = time.monotonic()
                    if now >= deadline:
                        raise _Deadline()
                    window_bytes += len(block)
                    if now - window_start >= timeout_s:
                        if window_bytes < MIN_RATE * (now - window_start):
                            raise _Transient(f"slower than {MIN_RATE // 1024} KiB/s for {now - window_start:.0f} s")
                        window_start, window_bytes = now, 0
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise _write_error(part, exc) from None
                    received += len(block)
                    if progress is not None:
                        progress.advance(len(block))
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise _write_error(part, exc) from None
            if length is not None and received < length:
                raise _Transient(f"connection closed after {received} of {length} bytes")
            ok = True
        finally:
            if progress is not None:
                progress.finish(ok)


def _verify_and_install(spec: ModelSpec, url: str, part: Path, dest: Path) -> FetchResult:
    """Check size and SHA-256 of the finished part, then rename it into place atomically."""
    size = part.stat().st_size
    if spec.size is not None and size != spec.size:
        part.unlink()
        raise _Mismatch(
            f"size mismatch: got {size} bytes, the catalogue says {spec.size}; deleted the partial file {part.name}"
        )
    actual = file_sha256(part)
    if spec.sha256 is not None and actual != spec.sha256:
        part.unlink()
        raise _Mismatch(
            f"SHA-256 mismatch: got {actual}, the catalogue pins {spec.sha256}; deleted the partial file {part.name}"
        )
    if spec.sha256 is None:
        try:  # nothing to compare the bytes with: they must at least be the contract's graph
            check_onnx_contract(part, spec.contract, spec.name, "nothing kept")
        except ModelError as exc:
            part.unlink()
            raise _Mismatch(str(exc).removeprefix(f"{spec.name}: ")) from None
        log.warning(
            "no published SHA-256 for this model: only the transfer length was checked; "
            "its hash is recorded now and checked on every later load",
            extra=kv(model=spec.name, sha256=actual, url=redact_uri(url)),
        )
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    log.info("model downloaded", extra=kv(model=spec.name, path=dest, bytes=size))
    return FetchResult(dest, actual, size, url, pinned=spec.sha256 is not None)


def _write_error(part: Path, exc: OSError) -> DownloadError:
    """A local disk problem: retrying the network will not help."""
    return DownloadError(
        f"cannot write {part} ({exc.strerror or exc}); free some space or point models.dir at another folder"
    )


def _classify_network_error(reason: object) -> Exception:
    """DNS failures will not fix themselves within a retry window; the rest may."""
    if isinstance(reason, socket.gaierror):
        return _Permanent(f"cannot resolve host ({reason})")
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return _Transient("timed out (no data within models.timeout_s)")
    return _Transient(f"{type(reason).__name__}: {reason}")


def _host(url: str) -> str:
    """The server of `url` for messages: host[:port], never its user:password@."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname
    if not host:
        return redact_uri(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an flock on `lock_path` so two processes never write the same part file.

    The lock file is left in place: unlinking it would let a third process lock a new
    inode while a second still waits on the old one.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    with open(lock_path, "a+b") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"another process is downloading into {lock_path.parent} (lock {lock_path}); wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
