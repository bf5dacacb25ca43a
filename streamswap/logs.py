"""Logging set-up: one event per line, key=value context, colour only on a terminal.

Modules log with `log.info("engine built", extra=kv(model=name, seconds=12.3))`; the
formatter appends the key=value pairs so journald and grep see one self-contained line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_LEVEL_COLOURS = {"WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[31;1m"}


def kv(**context: Any) -> dict[str, Any]:
    """`extra=` payload carrying key=value context for one log record."""
    return {"kv": context}


def _format_value(value: Any) -> str:
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return f'"{text}"' if (" " in text or not text) else text


class KeyValueFormatter(logging.Formatter):
    def __init__(self, colour: bool, timestamps: bool) -> None:
        super().__init__()
        self.colour = colour
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\n", " ⏎ ")
        context = getattr(record, "kv", None) or {}
        pairs = " ".join(f"{k}={_format_value(v)}" for k, v in context.items())
        level = record.levelname
        if self.colour and level in _LEVEL_COLOURS:
            level = f"{_LEVEL_COLOURS[level]}{level}\033[0m"
        head = f"{self.formatTime(record, '%H:%M:%S')} " if self.timestamps else ""
        line = f"{head}{level} {record.name}: {message}"
        if pairs:
            line = f"{line} {pairs}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def setup_logging(level: str = "INFO", stream: Any = None) -> None:
    """Configure the root logger once; journald adds its own timestamps, a TTY gets ours."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter(colour=tty, timestamps=tty))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
