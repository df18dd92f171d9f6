"""Per-call context that follows a request through a server and into its outgoing calls."""

from __future__ import annotations

import contextvars
import uuid

# The id of the request being handled: Envoy's `x-request-id` (Envoy generates one when the
# client sends none), or one made here for a call that did not come through Envoy.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ragmesh_request_id", default=None
)

REQUEST_ID_HEADER = "x-request-id"


def new_request_id() -> str:
    return str(uuid.uuid4())
