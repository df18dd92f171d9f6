"""JSON-lines logging on stdout: one object per line, easy to grep and to ship."""

from __future__ import annotations

import faulthandler
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from opentelemetry import trace

from ragmeshd import __version__
from ragmeshd.runtime.audit import open_audit_file
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


class HumanFormatter(JsonFormatter):
    """One readable line per record, for a person at a terminal: time, level, event, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = json.loads(super().format(record))
        head = f"{entry.pop('time')[11:19]} {entry.pop('level'):<7} {entry.pop('event')}"
        for name in ("service", "version", "logger", "trace_id", "span_id"):
            entry.pop(name, None)
        fields = " ".join(f"{key}={value}" for key, value in entry.items() if key != "traceback")
        traceback_text = entry.get("traceback")
        return f"{head}  {fields}".rstrip() + (f"\n{traceback_text}" if traceback_text else "")


def configure_logging(service: str, level: str, state_dir: Path | None = None) -> None:
    """Send every logger's records to stdout: JSON lines, or readable lines on a terminal; a
    fatal signal (a crash inside a C extension) dumps every thread's Python stack to stderr,
    which `up` keeps in the child's `.stderr.log`. With `state_dir`, audit events also go to
    STATE_DIR/logs/audit.log (runtime/audit.py)."""
    faulthandler.enable(file=sys.stderr, all_threads=True)
    handler = logging.StreamHandler(sys.stdout)
    json_lines = JsonFormatter(service)
    handler.setFormatter(HumanFormatter(service) if sys.stdout.isatty() else json_lines)
    if state_dir is not None:
        open_audit_file(state_dir / "logs", json_lines)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that are chatty at INFO.
    for noisy in ("httpx", "sentence_transformers", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
