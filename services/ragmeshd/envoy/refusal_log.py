"""Envoy's own refusals in the audit stream (issue 23, docs/security.md "Audit log").

Envoy answers some calls itself, before any server sees them: a credential in a form other
than the two accepted or a body over its route's limit (the credential filter,
runtime/credentials.py), a key over its rate limit, and a limited key's call when the
rate-limit service does not answer in time (fail closed). The servers write their refusals
to STATE_DIR/logs/audit.log; these go to envoy-audit.log beside it, one JSON line each with
the same fields (reason, key id, peer identity), written by Envoy's file access loggers, so a
flood of refusals costs no Python process anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragmeshd.envoy.yaml_templates import render

# The file beside audit.log (runtime/audit.py) in STATE_DIR/logs.
ENVOY_AUDIT_LOG = "envoy-audit"

# Each kind of refusal: the access-log filter that selects its calls and the reason written.
# The credential filter leaves its reason in the dynamic metadata (ragmesh:refused); the
# rate-limit filter marks its refusals with a response flag.
REFUSALS: tuple[tuple[dict[str, Any], str], ...] = (
    (
        {
            "metadata_filter": {
                "matcher": {
                    "filter": "ragmesh",
                    "path": [{"key": "refused"}],
                    "value": {"present_match": True},
                },
                # Envoy logs a call whose metadata lacks the key unless told not to.
                "match_if_key_not_found": False,
            }
        },
        "%DYNAMIC_METADATA(ragmesh:refused)%",
    ),
    ({"response_flag_filter": {"flags": ["RL"]}}, "over its rate limit"),
    (
        {"response_flag_filter": {"flags": ["RLSE"]}},
        "the rate-limit service did not answer in time",
    ),
)


def refusal_loggers(path: Path, listener: str) -> list[Any]:
    """The access loggers that append `listener`'s refusals to `path` (one file for all)."""
    return [
        render("refusal_log.yaml", filter=selects, reason=reason, path=str(path), listener=listener)
        for selects, reason in REFUSALS
    ]
