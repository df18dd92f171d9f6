"""What an API key may call: the scopes, the one scope each RPC needs, and service keys' scopes.

A key carries a set of scopes; an RPC needs exactly one (`required_scope`), and `admin`
stands for all of them. Reflection and health need none (reflection only describes the API).
A method of a ragmesh service that is missing from METHOD_SCOPES needs `admin`, so a new RPC
is closed until someone decides who may call it (tests/unit/runtime/test_scopes.py fails until
then).
"""

from __future__ import annotations

from collections.abc import Iterable

ADMIN = "admin"
SCOPES = (
    "embed",
    "search.read",
    "search.write",
    "search.admin",
    "ask",
    "feedback",
    "interactions.read",
    "interactions.export",
    "llm",
    # Forward a caller's key (runtime/tenancy.py DELEGATION_HEADER) so a read is done with
    # the caller's collections and groups: the coordinator's key, searching for Ask.
    "delegate",
    ADMIN,
)
# What `ragmesh keys create NAME` gives a key when --scopes is not given.
DEFAULT_SCOPES = ("embed", "search.read", "ask")

_EMBEDDINGS = "/ragmesh.embeddings.v1.EmbeddingsService/"
_SEARCH = "/ragmesh.search.v1.SearchService/"
_COORDINATOR = "/ragmesh.coordinator.v1.CoordinatorService/"
_LLM = "/ragmesh.llm.v1.LlmService/"
METHOD_SCOPES = {
    f"{_EMBEDDINGS}Embed": "embed",
    f"{_EMBEDDINGS}EmbedStream": "embed",
    f"{_EMBEDDINGS}Info": "embed",
    f"{_SEARCH}ListCollections": "search.read",
    f"{_SEARCH}GetCollection": "search.read",
    f"{_SEARCH}GetDocument": "search.read",
    f"{_SEARCH}CountDocuments": "search.read",
    f"{_SEARCH}ListDocuments": "search.read",
    f"{_SEARCH}Search": "search.read",
    f"{_SEARCH}UpsertDocuments": "search.write",
    f"{_SEARCH}UploadFiles": "search.write",
    f"{_SEARCH}DeleteDocuments": "search.write",
    f"{_SEARCH}CreateCollection": "search.admin",
    f"{_SEARCH}DeleteCollection": "search.admin",
    f"{_COORDINATOR}AugmentQuery": "ask",
    f"{_COORDINATOR}Ask": "ask",
    # +1 feedback publishes the question and answer into the shared interactions collection.
    f"{_COORDINATOR}RecordFeedback": "feedback",
    f"{_COORDINATOR}GetInteraction": "interactions.read",
    f"{_COORDINATOR}ExportInteractions": "interactions.export",
    # The language model itself: the coordinator's key (its LOCAL route) and admin keys.
    f"{_LLM}Generate": "llm",
    f"{_LLM}Info": "llm",
}
# Calls any valid key may make: they describe the API and reveal no data.
_OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

# The scopes of each service's own key: exactly the RPCs that service calls.
SERVICE_SCOPES: dict[str, tuple[str, ...]] = {
    "embeddings": (),
    # Info (model dimensions) and Embed.
    "search": ("embed",),
    # Search and ListCollections for context only on a caller's behalf (delegate: the
    # caller's key bounds them); Create/Upsert/Delete for the interactions collection that +1
    # feedback feeds, which is the only collection its key reaches (SERVICE_COLLECTIONS).
    "coordinator": ("search.write", "llm", "delegate"),
    "llm": (),
}
# The collections a service's own key reaches (absent: every collection).
SERVICE_COLLECTIONS: dict[str, tuple[str, ...]] = {"coordinator": ("interactions",)}
CREATE_COLLECTION = "/ragmesh.search.v1.SearchService/CreateCollection"


def required_scope(method: str) -> str | None:
    """The scope `method` ("/pkg.Service/Method") needs; None for health and reflection."""
    if method.startswith(_OPEN_PREFIXES):
        return None
    return METHOD_SCOPES.get(method, ADMIN)


def allows(scopes: Iterable[str], needed: str | None) -> bool:
    held = set(scopes)
    return needed is None or ADMIN in held or needed in held


def may_create_named(scopes: Iterable[str], collections: Iterable[str], method: str) -> bool:
    """A key with `search.write` limited to collections named outright (no wildcard) may
    create those collections (the servicer checks the name): the coordinator's key makes
    its interactions collection this way, without `search.admin`."""
    patterns = list(collections)
    return (
        method == CREATE_COLLECTION
        and "search.write" in set(scopes)
        and bool(patterns)
        and not any(c in pattern for pattern in patterns for c in "*?")
    )


def parse_scopes(text: str) -> tuple[str, ...]:
    """`"embed, search.read"` → ("embed", "search.read"); an unknown scope is a ValueError."""
    scopes = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"give at least one scope of: {', '.join(SCOPES)}")
    return scopes
