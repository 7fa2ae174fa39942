"""Structured logging shared by both sides, so harness and control-plane logs read and query the
same way: one JSON object per line on stderr, with the `extra` fields of each call. A person at a
terminal gets the same records as readable lines instead (`TextFormatter`).

The format: `configure_logging`'s argument, else ``VWM_LOG_FORMAT`` (``json``, ``text`` or
``auto``), else ``auto``: text when stderr is a terminal, JSON otherwise (a file, a pipe, a pod's
log collector). Text logging also quiets the start-up chatter of libraries (`QUIET_ON_TEXT`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Literal, TextIO

LogFormat = Literal["json", "text"]
FORMATS = ("auto", "json", "text")
# Libraries whose INFO lines say only that they are starting or what they loaded: noise for a
# person reading a terminal, kept in JSON logs (a log collector filters by level and logger).
QUIET_ON_TEXT = ("uvicorn", "uvicorn.error", "alembic", "functions_framework", "httpx")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _extra(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extra(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level message  key=value ...`` in local time, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{clock} {record.levelname.lower():<7} {record.getMessage()}"
        fields = " ".join(f"{k}={_field(v)}" for k, v in _extra(record).items())
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _field(value: object) -> str:
    """A string bare when it is one word, quoted otherwise; anything else as compact JSON."""
    if not isinstance(value, str):
        return json.dumps(value, default=str, separators=(",", ":"))
    return json.dumps(value) if not value or any(c.isspace() or c == '"' for c in value) else value


def log_format(requested: str | None = None, stream: TextIO | None = None) -> LogFormat:
    """The format `requested` (or ``VWM_LOG_FORMAT``) names, ``auto`` resolved against
    `stream` (stderr by default). An unknown name is a ValueError that lists the known ones."""
    name = (requested or os.environ.get("VWM_LOG_FORMAT") or "auto").strip().lower()
    if name not in FORMATS:
        raise ValueError(f"unknown log format {name!r}: use one of {', '.join(FORMATS)}")
    if name == "auto":
        isatty = getattr(stream or sys.stderr, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return "json" if name == "json" else "text"


def configure_logging(level: str | None = None, format_name: str | None = None) -> LogFormat:
    """Log every record to stderr in the chosen format (see the module); returns the format."""
    chosen = log_format(format_name)
    handler = logging.StreamHandler()
    handler.setFormatter(TextFormatter() if chosen == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("VWM_LOG_LEVEL", "INFO")).upper())
    if chosen == "text":
        for name in QUIET_ON_TEXT:
            logging.getLogger(name).setLevel(logging.WARNING)
    return chosen
