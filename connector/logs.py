"""Structured JSON-lines logging: ids, counts and reasons only, never PHI.

Call `event(logger, "name", key=value, ...)`. Field values must be scalars; exception
messages are never written (they may quote input), only the exception type and where it
was raised.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

ROOT = "ccm"
_SCALARS = (str, int, float, bool, type(None))


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "at": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None) or {}
        for key, value in fields.items():
            line[key] = value if isinstance(value, _SCALARS) else repr(type(value).__name__)
        if record.exc_info and record.exc_info[0] is not None:
            etype, _, tb = record.exc_info
            line["error_type"] = etype.__name__
            line["error_at"] = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in traceback.extract_tb(tb)[-3:]]
        return json.dumps(line, ensure_ascii=False, sort_keys=False)


def setup_logging(level: str = "info", file: Path | None = None) -> None:
    """Send the connector's logs to stderr (and a file) as JSON lines. Safe to call twice."""
    root = logging.getLogger(ROOT)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level.upper())
    root.propagate = False
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(JsonLines())
        root.addHandler(handler)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{ROOT}.{name}")


def event(logger: logging.Logger, name: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Log one event with scalar fields (ids, counts, reasons)."""
    logger.log(level, name, extra={"fields": fields}, exc_info=exc_info)
