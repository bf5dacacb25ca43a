"""Logging set-up: one event per line, key=value context, colour only on a terminal.

Modules log with `log.info("engine built", extra=kv(model=name, seconds=12.3))`; the
formatter appends the key=value pairs so journald and grep see one self-contained line.
Off a terminal (a pipe, a file, journald) every record is exactly one line: newlines in
messages, values and tracebacks are folded. Under systemd (stderr is the journal stream
named by $JOURNAL_STREAM) each line starts with a `<N>` syslog priority, which journald
turns into the entry's priority (`journalctl -p warning`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from streamswap.redact import redact_text

_LEVEL_COLOURS = {"WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[31;1m"}
# sd-daemon(3) prefixes: syslog priorities by logging level.
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
_FOLD = " ⏎ "


def kv(**context: Any) -> dict[str, Any]:
    """`extra=` payload carrying key=value context for one log record."""
    return {"kv": context}


def _format_value(value: Any) -> str:
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    if not text or any(c in text for c in ' "=\\\n\r\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return f'"{escaped}"'
    return text


class KeyValueFormatter(logging.Formatter):
    """`LEVEL logger: message k=v ...`; `colour`/`timestamps` for terminals, `priority`
    prefixes for journald; `multiline` keeps tracebacks readable on a terminal."""

    def __init__(self, colour: bool, timestamps: bool, priority: bool = False, multiline: bool | None = None) -> None:
        super().__init__()
        self.colour = colour
        self.timestamps = timestamps
        self.priority = priority
        self.multiline = colour if multiline is None else multiline

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\r\n", "\n").replace("\n", _FOLD)
        context = getattr(record, "kv", None) or {}
        pairs = " ".join(f"{k}={_format_value(v)}" for k, v in context.items())
        level = record.levelname
        if self.colour and level in _LEVEL_COLOURS:
            level = f"{_LEVEL_COLOURS[level]}{level}\033[0m"
        head = f"{self.formatTime(record, '%H:%M:%S')} " if self.timestamps else ""
        if self.priority:
            head = f"<{_PRIORITY.get(record.levelname, 6)}>{head}"
        line = f"{head}{level} {record.name}: {message}"
        if pairs:
            line = f"{line} {pairs}"
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line = f"{line}\n{trace}" if self.multiline else f"{line}{_FOLD}{trace.replace(chr(10), _FOLD)}"
        # The net under every log line (ours, uvicorn's, a traceback's): no stream key or
        # password of an address reaches the journal.
        return redact_text(line)


def _is_journal(stream: Any) -> bool:
    """True when `stream` is the journald stream systemd connected ($JOURNAL_STREAM=dev:ino)."""
    spec = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = spec.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not to the object it was
    at set-up: whoever swaps sys.stderr (pytest's capture, a caller of `cli.main()`) and
    closes the old one later leaves no handler on a closed stream."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


def setup_logging(level: str = "INFO", stream: Any = None) -> None:
    """Configure the root logger once; journald adds its own timestamps, a TTY gets ours.
    Without `stream`, records go to the current sys.stderr (see StderrHandler)."""
    handler = logging.StreamHandler(stream) if stream is not None else StderrHandler()
    stream = handler.stream
    tty = hasattr(stream, "isatty") and stream.isatty()
    handler.setFormatter(KeyValueFormatter(colour=tty, timestamps=tty, priority=_is_journal(stream)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
