"""Recent log events for the control page: a logging handler keeping the last records
(INFO and up, formatted and redacted as in the journal) in a bounded ring."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from streamswap.logs import KeyValueFormatter


class EventLog(logging.Handler):
    """`attach()` to the streamswap logger; `since(seq)` gives the newer events."""

    def __init__(self, size: int = 200, level: int = logging.INFO, logger: str = "streamswap") -> None:
        super().__init__(level)
        self.setFormatter(KeyValueFormatter(colour=False, timestamps=False))
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._seq = 0
        self._lock2 = threading.Lock()
        self._logger = logging.getLogger(logger)

    def attach(self) -> "EventLog":
        self._logger.addHandler(self)
        return self

    def detach(self) -> None:
        self._logger.removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that cannot be formatted is not worth a crash
            return
        # The formatter writes "LEVEL logger: message k=v"; the page shows level and time apart.
        text = line.split(": ", 1)[1] if ": " in line else line
        with self._lock2:
            self._seq += 1
            self._events.append(
                {
                    "seq": self._seq,
                    "time": record.created,
                    "level": record.levelname,
                    "logger": record.name,
                    "text": text[:2000],
                }
            )

    def since(self, seq: int = 0, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """(the newest seq, events newer than `seq`, at most `limit` of the newest)."""
        with self._lock2:
            newer = [e for e in self._events if e["seq"] > seq]
            return self._seq, newer[-limit:]
