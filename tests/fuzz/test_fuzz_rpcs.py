"""Property-based fuzzing of every RPC through Envoy (mTLS, an API key) on the shared mesh.

For each RPC: random well-typed messages (tests/fuzz/strategies.py) and bytes that are no
valid message. Whatever arrives, no answer may be INTERNAL or UNKNOWN (a client never sees
INTERNAL for something it sent), bytes that do not parse are INVALID_ARGUMENT rather than a
transport failure, and afterwards the mesh is healthy and no server logged an unhandled
exception, and no process crashed. Fixed seed (derandomize); RAGMESH_FUZZ_EXAMPLES cases per
RPC and kind, 100 in `make test` (the RPCs are now 24: 300 cases took the suite past its
15 minutes on 2 cores), 2,000 in `make fuzz`.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmeshd.envoy.admin import clusters_healthy
from tests.fuzz.client import RPCS, RawClient, Rpc
from tests.fuzz.strategies import KNOWN_NAMES, messages, undecodable_bytes
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("RAGMESH_FUZZ_EXAMPLES", "100"))
# Codes that mean the server failed on what it was sent.
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Most calls get a normal deadline; a few one so short that the client leaves while the
# server is still working (the server must not log that as its own failure).
DEADLINES_S = st.one_of(st.just(10.0), st.sampled_from([0.001, 0.01, 0.05]))

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# Status codes seen, by RPC and kind of input, and the first message of each: printed at the
# end (pytest -s).
SEEN: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
FIRST_DETAILS: dict[tuple[str, str], str] = {}


def _record(kind: str, code: grpc.StatusCode, details: str) -> None:
    SEEN[kind][code.name] += 1
    FIRST_DETAILS.setdefault((kind, code.name), details[:200])


# Each child's restarts when fuzzing began: a server that crashes (a SIGSEGV in native code)
# is restarted by `ragmesh up`, and its calls in flight end UNAVAILABLE, which alone would pass.
RESTARTS_BEFORE: dict[str, int] = {}


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[RawClient]:
    RESTARTS_BEFORE.update(mesh.state.restarts)
    raw = RawClient(mesh.endpoint, mesh.client_credentials(), mesh.api_key)
    _create_known_names(raw)
    yield raw
    raw.close()


def _create_known_names(raw: RawClient) -> None:
    """The collection and documents KNOWN_NAMES refers to, so fuzzed calls reach them."""
    collection, *documents = KNOWN_NAMES
    create = next(rpc for rpc in RPCS if rpc.name == "SearchService/CreateCollection")
    upsert = next(rpc for rpc in RPCS if rpc.name == "SearchService/UpsertDocuments")
    raw.call(create, search_pb.CreateCollectionRequest(name=collection).SerializeToString(), 30)
    request = search_pb.UpsertDocumentsRequest(
        collection=collection,
        documents=[search_pb.Document(id=d, text=f"fuzz document {d}") for d in documents],
    )
    code, details = raw.call(upsert, request.SerializeToString(), 30)
    assert code is grpc.StatusCode.OK, details


def _typed(rpc: Rpc) -> st.SearchStrategy[bytes | list[bytes]]:
    message = messages(rpc.input_type).map(lambda m: m.SerializeToString())
    if rpc.client_streaming:
        return st.lists(message, max_size=4)
    return message


def _parses(rpc: Rpc, data: bytes) -> bool:
    """Whether `data` is a valid encoding of the RPC's request (the same protobuf runtime
    as the servers')."""
    try:
        GetMessageClass(rpc.input_type).FromString(data)
    except DecodeError:
        return False
    return True


def _raw(rpc: Rpc) -> st.SearchStrategy[bytes | list[bytes]]:
    if rpc.client_streaming:
        return st.lists(undecodable_bytes(), min_size=1, max_size=3)
    return undecodable_bytes()


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
def test_well_typed_messages_never_get_internal(client: RawClient, rpc: Rpc) -> None:
    @FUZZ_SETTINGS
    @given(payload=_typed(rpc), deadline_s=DEADLINES_S)
    def check(payload: bytes | list[bytes], deadline_s: float) -> None:
        code, details = client.call(rpc, payload, deadline_s)
        _record(f"{rpc.name} typed", code, details)
        assert code not in FORBIDDEN, f"{rpc.path} answered {code.name}: {details}"

    check()


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
def test_bytes_that_do_not_parse_are_invalid_argument(client: RawClient, rpc: Rpc) -> None:
    @FUZZ_SETTINGS
    @given(payload=_raw(rpc))
    def check(payload: bytes | list[bytes]) -> None:
        code, details = client.call(rpc, payload, 10.0)
        _record(f"{rpc.name} raw", code, details)
        assert code not in FORBIDDEN, f"{rpc.path} answered {code.name}: {details}"
        # Envoy answering for an upstream that broke the protocol shows as UNAVAILABLE.
        assert code is not grpc.StatusCode.UNAVAILABLE, f"{rpc.path}: {details}"
        # Noise can be a valid encoding (unknown fields, say); what the server reads first
        # and cannot parse is answered INVALID_ARGUMENT, before any other check.
        first = payload if isinstance(payload, bytes) else payload[0]
        if not _parses(rpc, first):
            assert code is grpc.StatusCode.INVALID_ARGUMENT, f"{rpc.path}: {code.name} {details}"
            assert "does not parse" in details, details

    check()


def test_the_mesh_is_healthy_after_fuzzing(mesh: Mesh, client: RawClient) -> None:
    for kind, codes in sorted(SEEN.items()):
        print(f"{kind}: {dict(codes)}")
        for code in codes:
            print(f"    {code}: {FIRST_DETAILS[(kind, code)]}")
    services = sorted({replica.service for replica in mesh.state.replicas})
    assert asyncio.run(clusters_healthy(mesh.admin, services))
    info = next(rpc for rpc in RPCS if rpc.name == "EmbeddingsService/Info")
    assert client.call(info, b"", 10)[0] is grpc.StatusCode.OK
    unhandled = [
        line
        for log in sorted((mesh.state_dir / "logs").glob("*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if "unhandled exception" in line
    ]
    assert not unhandled, "\n".join(unhandled[:5])
    state = mesh.state
    crashed = {
        name: state.last_exit.get(name, "")
        for name, count in state.restarts.items()
        if count > RESTARTS_BEFORE.get(name, 0)
    }
    stacks = [
        log.read_text(errors="replace")[-3000:]
        for log in sorted((mesh.state_dir / "logs").glob("*.stderr.log"))
        if "Fatal Python error" in log.read_text(errors="replace")
    ]
    assert not crashed, f"restarted while fuzzing: {crashed}\n" + "\n".join(stacks)
