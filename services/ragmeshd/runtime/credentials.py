"""One credential per request: the rule every gate of the mesh follows.

A call carries exactly one of `authorization: Bearer <key>` or `x-api-key: <key>`. Both
headers, a header sent twice, another scheme (Basic, Digest…), or a key wrapped in extra
whitespace is refused as UNAUTHENTICATED before anything else runs, with ACCEPTED_FORMS in the
message. Envoy applies the rule first (the Lua filter rendered from LUA_CREDENTIAL_CHECK, in
front of the rate-limit filter, so no decoy header can make the rate-limit service and the
servers see different keys); the servers (runtime/auth.py), the rate-limit service and the
OpenAI adapter apply the same function again behind it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ragmeshd.defaults import HTTP_MAX_BODY_BYTES, UPLOAD_MAX_BYTES

AUTHORIZATION = "authorization"
API_KEY = "x-api-key"
CREDENTIAL_HEADERS = (AUTHORIZATION, API_KEY)
ACCEPTED_FORMS = "send exactly one of `authorization: Bearer <key>` or `x-api-key: <key>`"
# A key's text: rmk_/rmkl_, a hex id, base64url secret; nothing else, no whitespace.
_KEY_TEXT = r"[A-Za-z0-9_-]+"
_BEARER = re.compile(rf"(?i:bearer) ({_KEY_TEXT})")
_API_KEY = re.compile(_KEY_TEXT)


class CredentialError(ValueError):
    """The call's credential headers break the one-credential rule."""


def single_credential(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The one key a call presents, None when it presents none; CredentialError when it
    presents more than one, or one in a form other than the two accepted."""
    found = []
    for name, value in metadata or ():
        lowered = name.lower()
        if lowered in CREDENTIAL_HEADERS:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            found.append((lowered, text))
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        raise CredentialError(f"more than one credential ({names}): {ACCEPTED_FORMS}")
    name, text = found[0]
    match = (_BEARER if name == AUTHORIZATION else _API_KEY).fullmatch(text)
    if match is None:
        what = "not `Bearer <key>`" if name == AUTHORIZATION else "not a key"
        raise CredentialError(f"the {name} header is {what}: {ACCEPTED_FORMS}")
    return match.group(1) if name == AUTHORIZATION else match.group(0)


# The file upload route (POST /v1/collections/{collection}/files?file_name=...) streams up to its
# own limit. The :path Envoy sees holds the query string, so the pattern is not anchored at the
# end (no other route starts like this one).
UPLOAD_PATH_LUA = "^/v1/collections/[^/?]+/files"

# Envoy's half of the rule, as a Lua filter on every listener (envoy/credential_filter.yaml):
# the same checks as single_credential, an UNAUTHENTICATED answer in the caller's protocol
# (gRPC status 16, or HTTP 401 with an OpenAI-style error), and the key's id in the request's
# dynamic metadata so every access-log line names the key (the id, never the secret). It also
# refuses an HTTP body whose Content-Length is over HTTP_MAX_BODY_BYTES (UPLOAD_MAX_BYTES on the
# upload route) with 413 before anything buffers it. Each refusal leaves its reason in the
# dynamic metadata too (ragmesh:refused), which selects the line of Envoy's audit log
# (envoy/templates/refusal_log.yaml).
LUA_CREDENTIAL_CHECK = """
local ACCEPTED = "ACCEPTED_FORMS"

local function refuse(handle, why)
  handle:streamInfo():dynamicMetadata():set("ragmesh", "refused", why)
  local message = why .. ": " .. ACCEPTED
  local content_type = handle:headers():get("content-type") or ""
  if string.sub(content_type, 1, 16) == "application/grpc" then
    handle:respond({[":status"] = "200", ["content-type"] = "application/grpc",
                    ["grpc-status"] = "16", ["grpc-message"] = message}, "")
  else
    handle:respond({[":status"] = "401", ["content-type"] = "application/json",
                    ["www-authenticate"] = "Bearer"},
                   '{"error": {"message": "' .. message ..
                   '", "type": "invalid_request_error", "code": "unauthenticated"}}')
  end
end

local function too_large(handle, limit)
  local message = "the request body is over " .. limit .. " bytes, this route's limit"
  handle:streamInfo():dynamicMetadata():set("ragmesh", "refused", message)
  handle:respond({[":status"] = "413", ["content-type"] = "application/json"},
                 '{"error": {"message": "' .. message ..
                 '", "type": "invalid_request_error", "code": "request_too_large"}}')
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- HTTP bodies (JSON for the transcoder, the OpenAI routes) are capped before any buffering;
  -- gRPC messages have the servers' own limits.
  local content_type = headers:get("content-type") or ""
  local declared = tonumber(headers:get("content-length") or "")
  local limit = MAX_BODY_BYTES
  if string.match(headers:get(":path") or "", "UPLOAD_PATH") then
    limit = UPLOAD_MAX_BYTES
  end
  if declared ~= nil and declared > limit
      and string.sub(content_type, 1, 16) ~= "application/grpc" then
    return too_large(handle, limit)
  end
  local bearers = headers:getNumValues("authorization")
  local api_keys = headers:getNumValues("x-api-key")
  if bearers + api_keys > 1 then
    return refuse(handle, "more than one credential")
  end
  local key = nil
  if bearers == 1 then
    key = string.match(headers:get("authorization"), "^[Bb][Ee][Aa][Rr][Ee][Rr] ([%w_%-]+)$")
    if key == nil then
      return refuse(handle, "the authorization header is not `Bearer <key>`")
    end
  elseif api_keys == 1 then
    key = string.match(headers:get("x-api-key"), "^([%w_%-]+)$")
    if key == nil then
      return refuse(handle, "the x-api-key header is not a key")
    end
  end
  local id = key and string.match(key, "^rmkl?_(%x+)_")
  if id ~= nil then
    handle:streamInfo():dynamicMetadata():set("ragmesh", "key_id", id)
  end
end
""".replace("ACCEPTED_FORMS", ACCEPTED_FORMS)
LUA_CREDENTIAL_CHECK = (
    LUA_CREDENTIAL_CHECK.replace("UPLOAD_MAX_BYTES", str(UPLOAD_MAX_BYTES))
    .replace("MAX_BODY_BYTES", str(HTTP_MAX_BODY_BYTES))
    .replace("UPLOAD_PATH", UPLOAD_PATH_LUA)
)
