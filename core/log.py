"""Agent logging the way Pacemaker and Heartbeat expect it.

Honours HA_LOGFILE (info and up), HA_DEBUGLOG (debug and up, when debug is
on), HA_LOGFACILITY (syslog facility; "none" or unset means no syslog) and
HA_debug ("0" or unset means off). Warnings and errors also go to stderr,
which Pacemaker's executor records with the operation.

Deliberately not built on :mod:`logging`: importing it costs several
milliseconds, and every monitor is a fresh interpreter. The interface is the
subset of a logging.Logger that hapack uses.
"""

from __future__ import annotations

import os
import sys
import time

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
               "uucp", "cron", "authpriv", "ftp", "local0", "local1", "local2",
               "local3", "local4", "local5", "local6", "local7")


def debug_enabled(environ: dict[str, str]) -> bool:
    value = environ.get("HA_debug", environ.get("HA_DEBUG", "0")).strip().lower()
    return value not in ("", "0", "false", "no", "off")


class Logger:
    """Writes ``tag[pid]: LEVEL: message`` lines to the configured sinks."""

    def __init__(self, tag, environ=None, stderr=None):
        environ = os.environ if environ is None else environ
        self.tag = tag
        self.debugging = debug_enabled(environ)
        self.logfile = environ.get("HA_LOGFILE") or None
        self.debuglog = (environ.get("HA_DEBUGLOG") or None) if self.debugging else None
        facility = (environ.get("HA_LOGFACILITY") or environ.get("HA_logfacility") or "").lower()
        self.facility = facility if facility in _FACILITIES else None
        self.stderr = sys.stderr if stderr is None else stderr  # None: DRBD's handlers have none
        self._syslog = None

    def _line(self, level, message):
        stamp = time.strftime("%b %d %H:%M:%S")
        return f"{stamp} {self.tag}[{os.getpid()}]: {_NAMES[level]}: {message}\n"

    def _append(self, path, line):
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:
            pass  # a full or missing log disk must not fail the agent

    def _to_syslog(self, level, message):
        if self._syslog is None:
            import syslog
            syslog.openlog(self.tag, syslog.LOG_PID,
                           getattr(syslog, "LOG_" + self.facility.upper()))
            self._syslog = syslog
        priority = {DEBUG: self._syslog.LOG_DEBUG, INFO: self._syslog.LOG_INFO,
                    WARNING: self._syslog.LOG_WARNING, ERROR: self._syslog.LOG_ERR}[level]
        self._syslog.syslog(priority, f"{_NAMES[level]}: {message}")

    def log(self, level: int, message: str, stderr: bool = True) -> None:
        if level == DEBUG and not self.debugging:
            return
        line = self._line(level, message)
        if self.debuglog:
            self._append(self.debuglog, line)
        if level >= INFO and self.logfile and self.logfile != self.debuglog:
            self._append(self.logfile, line)
        if self.facility and level >= INFO:
            self._to_syslog(level, message)
        if stderr and self.stderr is not None and (level >= WARNING or self.debugging):
            try:
                self.stderr.write(line)
                self.stderr.flush()
            except (OSError, ValueError):
                pass

    def debug(self, message: str) -> None:
        self.log(DEBUG, message)

    def info(self, message: str) -> None:
        self.log(INFO, message)

    def warning(self, message: str) -> None:
        self.log(WARNING, message)

    def error(self, message: str) -> None:
        self.log(ERROR, message)


class NullLogger(Logger):
    def __init__(self):
        super().__init__("null", environ={})

    def log(self, level: int, message: str, stderr: bool = True) -> None:
        pass
