"""The audit log (issue 23): refused calls (reason, key id, peer identity) and every change of a
key or a certificate, as a JSON-lines stream of its own, STATE_DIR/logs/audit.log, besides the
process's own log (on Kubernetes, where the state folder is read-only, the same records reach
stdout with logger "ragmesh.audit"). docs/security.md lists its events.

    audit("key created", key_id=..., name=..., scopes=[...])
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

AUDIT_LOGGER = "ragmesh.audit"
AUDIT_FILE = "audit.log"

_audit = logging.getLogger(AUDIT_LOGGER)
_audit.setLevel(logging.INFO)


# Names a LogRecord already has: a field called so is stored with a trailing underscore.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


def audit(event: str, **fields: Any) -> None:
    """Record one audit event (never a secret: key ids, names, serials, peers)."""
    safe = {f"{key}_" if key in _RESERVED else key: value for key, value in fields.items()}
    _audit.info(event, extra={"audit": True, **safe})


def open_audit_file(logs_dir: Path, formatter: logging.Formatter) -> bool:
    """Also append audit events to logs_dir/audit.log; False where it cannot be written."""
    path = logs_dir / AUDIT_FILE
    if any(getattr(h, "baseFilename", None) == str(path) for h in _audit.handlers):
        return True
    try:
        logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError:
        return False
    handler.setFormatter(formatter)
    _audit.addHandler(handler)
    return True
