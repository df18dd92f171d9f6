"""JSON-lines logging on stdout: one object per line, easy to grep and to ship."""

from __future__ import annotations

import faulthandler
import json
import logging
import sys
import time
import traceback
from typing import Any

from opentelemetry import trace

from ragmeshd import __version__
from ragmeshd.runtime.context import request_id
from ragmeshd.runtime.redaction import redact

# LogRecord attributes that are not user fields.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; `extra=` fields become top-level keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "version": __version__,
            "logger": record.name,
            "event": redact(record.getMessage()),
            **_trace_ids(),
        }
        current_request = request_id.get()
        if current_request:
            entry["request_id"] = current_request
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["traceback"] = redact("".join(traceback.format_exception(*record.exc_info)))
        return json.dumps(entry, default=str)


def _trace_ids() -> dict[str, str | None]:
    """The current span's trace and span ids (W3C hex), None outside a traced call."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {"trace_id": None, "span_id": None}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def configure_logging(service: str, level: str) -> None:
    """Send every logger's records to stdout as JSON lines; a fatal signal (a crash inside
    a C extension) dumps every thread's Python stack to stderr, which `up` keeps in the
    child's `.stderr.log`."""
    faulthandler.enable(file=sys.stderr, all_threads=True)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that are chatty at INFO.
    for noisy in ("httpx", "sentence_transformers", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
