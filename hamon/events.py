"""hamon's logs: readable lines on stderr (the journal) and a structured event log.

Every line logged (info and up) is also an event: one JSON object per line
in the event log file, with the wall time, the monotonic time, the node,
the level and the message, plus the fields of structured events
(transitions, decisions, steps, timelines). The event log is what a
post-mortem reads; stderr is what an operator watches.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class EventLog:
    def __init__(self, node, path=None, stream=None, debug=False):
        self.node = node
        self.path = path
        self.stream = stream if stream is not None else sys.stderr
        self.debugging = debug
        self._lock = threading.Lock()
        self._file = None
        self.listeners = []   # callables given every record (alerts); they must not block
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", buffering=1)

    def event(self, kind: str, message: str = "", level: str = "info", **fields: Any) -> None:
        if LEVELS[level] < LEVELS["info"] and not self.debugging:
            return
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        record = {"time": now, "mono": round(time.monotonic(), 4), "node": self.node,
                  "level": level, "event": kind, "message": message, **fields}
        with self._lock:
            if message:
                try:
                    self.stream.write(f"{stamp} hamon[{self.node}] {level.upper()}: {message}\n")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
            if self._file is not None:
                try:
                    self._file.write(json.dumps(record, default=str) + "\n")
                except OSError:
                    pass  # a full log disk must not stop the heartbeats
        for listener in self.listeners:
            listener(record)

    def debug(self, message: str) -> None:
        self.event("log", message, "debug")

    def info(self, message: str) -> None:
        self.event("log", message, "info")

    def warning(self, message: str) -> None:
        self.event("log", message, "warning")

    def error(self, message: str) -> None:
        self.event("log", message, "error")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
