"""Preview-window children for the display tests (spawned: module-level functions only).

They stand in for HighGUI misbehaving the way it does in the field: never answering
(cv2.namedWindow spinning forever), stuck while holding the frame slot, refusing to open,
or closed by the user. SIGTERM is ignored, as it was by the hung window."""

from __future__ import annotations

import signal
import time
from typing import Any


def _forever() -> None:
    while True:
        time.sleep(0.5)


def hangs_opening(channel: Any, title: str, conn: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _forever()


def hangs_holding_the_slot(channel: Any, title: str, conn: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # before "ready": no window for a SIGTERM
    channel.lock.acquire()
    conn.send(("ready", ""))
    _forever()


def refuses(channel: Any, title: str, conn: Any) -> None:
    conn.send(("error", "qt.qpa.xcb: could not connect to display :99"))


def closed_by_the_user(channel: Any, title: str, conn: Any) -> None:
    conn.send(("ready", ""))
    conn.send(("closed", ""))


def aborts(channel: Any, title: str, conn: Any) -> None:
    import os

    os.abort()  # what Qt does when it cannot reach the display
