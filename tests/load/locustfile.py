"""Locust gRPC users that call the mesh through Envoy's client listener with mTLS and an API key.

    locust -f tests/load/locustfile.py --state-dir .ragmesh --headless -u 100 -t 60s
    make load                                  # the same, 100 users, reports under STATE_DIR/load/

User classes (pick some by name on the command line; all of them by default):
  EmbedUser    EmbeddingsService/Embed, one short text per call
  SearchUser   SearchService/Search in each mode (dense, keyword, hybrid)
  AskUser      CoordinatorService/Ask (the whole stream; no language model: context answers)
  MixedUser    the three above in the proportions 4 search : 2 embed : 1 ask

Each call is reported to Locust as request type "grpc" named after its method (and mode), with
its status code as the failure when it is not OK: every call is counted, and the channels make
no retries of their own (grpc.enable_retries 0; Envoy's retries inside the mesh show in the
report as its upstream_rq_retry counters). The collection the searches use is made and filled
once per run (on test start) when it is missing.

Texts are unique by default, so that neither the embeddings cache nor the search result cache
answers and every call reaches the model: a query from the fixed list with a unique suffix.
`--cache-hit-ratio R` sends a fixed-list text (one the caches have seen) with probability R.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# gRPC's C core must cooperate with gevent, which Locust runs on: first thing, before channels.
import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task

grpc_gevent.init_gevent()

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb  # noqa: E402
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc  # noqa: E402
from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb  # noqa: E402
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc  # noqa: E402
from ragmesh.search.v1 import search_service_pb2 as search_pb  # noqa: E402
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc  # noqa: E402
from tests.load.corpus import COLLECTION, fill_collection, queries  # noqa: E402

CALL_TIMEOUT_S = 60.0
MODES = {
    "dense": search_pb.SEARCH_MODE_DENSE,
    "keyword": search_pb.SEARCH_MODE_KEYWORD,
    "hybrid": search_pb.SEARCH_MODE_HYBRID,
}


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument(
        "--state-dir", default=".ragmesh", help="the mesh's state folder (certs, keys, mesh.json)"
    )
    parser.add_argument("--api-key-file", default="", help="default: STATE_DIR/keys/admin.key")
    parser.add_argument(
        "--cache-hit-ratio",
        type=float,
        default=0.0,
        help="share of calls whose text repeats (the caches may answer them); the rest are"
        " unique and reach the model (default 0)",
    )


class Mesh:
    """The endpoint, credentials and key of the mesh under STATE_DIR, as `ragmesh up` left them."""

    def __init__(self, state_dir: Path, api_key_file: str) -> None:
        from ragmeshd.supervisor.plan import MeshState

        state = MeshState.read(state_dir / "mesh.json")
        _host, _, port = state.client_listen.rpartition(":")
        self.endpoint = f"127.0.0.1:{port}"
        certs = state_dir / "certs"
        self.credentials = grpc.ssl_channel_credentials(
            root_certificates=(certs / "ca.pem").read_bytes(),
            private_key=(certs / "clients" / "client-key.pem").read_bytes(),
            certificate_chain=(certs / "clients" / "client.pem").read_bytes(),
        )
        key_path = Path(api_key_file) if api_key_file else state_dir / "keys" / "admin.key"
        self.metadata = (("authorization", f"Bearer {key_path.read_text().strip()}"),)

    def channel(self) -> grpc.Channel:
        # No retries in the client: Locust counts every call that failed.
        return grpc.secure_channel(
            self.endpoint, self.credentials, options=[("grpc.enable_retries", 0)]
        )


def _mesh(environment: Any) -> Mesh:
    options = environment.parsed_options
    return Mesh(Path(options.state_dir).resolve(), options.api_key_file)


@events.test_start.add_listener
def _fill_collection(environment: Any, **_kwargs: Any) -> None:
    """Create and fill the searched collection once, when missing (`make load` fills it
    before Locust starts, so that the timed run is all load)."""
    mesh = _mesh(environment)
    with mesh.channel() as channel:
        fill_collection(channel, mesh.metadata)


class GrpcUser(User):
    """A user with one channel to Envoy that reports each call to Locust."""

    abstract = True
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.mesh = _mesh(self.environment)
        self.channel = self.mesh.channel()
        self.embeddings = embeddings_grpc.EmbeddingsServiceStub(self.channel)
        self.search = search_grpc.SearchServiceStub(self.channel)
        self.coordinator = coordinator_grpc.CoordinatorServiceStub(self.channel)
        self.queries = queries()
        self.cache_hit_ratio = float(self.environment.parsed_options.cache_hit_ratio)

    def text(self) -> str:
        """A fixed-list query (with probability --cache-hit-ratio), else a unique one."""
        query = random.choice(self.queries)
        if random.random() < self.cache_hit_ratio:
            return query
        return f"{query} {uuid.uuid4().hex[:12]}"

    def on_stop(self) -> None:
        self.channel.close()

    def _timed(self, name: str, call: Callable[[], int]) -> None:
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            length = call()
        except grpc.RpcError as error:
            exception = error
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )

    def embed(self) -> None:
        request = embeddings_pb.EmbedRequest(inputs=[self.text()])
        self._timed(
            "Embed",
            lambda: self.embeddings.Embed(
                request, metadata=self.mesh.metadata, timeout=CALL_TIMEOUT_S
            ).ByteSize(),
        )

    def search_in(self, mode: str) -> None:
        request = search_pb.SearchRequest(
            collection=COLLECTION, query=self.text(), top_k=10, mode=MODES[mode]
        )
        self._timed(
            f"Search/{mode}",
            lambda: self.search.Search(
                request, metadata=self.mesh.metadata, timeout=CALL_TIMEOUT_S
            ).ByteSize(),
        )

    def ask(self) -> None:
        request = coordinator_pb.AskRequest(query=self.text(), collections=[COLLECTION], top_k=3)

        def call() -> int:
            stream = self.coordinator.Ask(
                request, metadata=self.mesh.metadata, timeout=CALL_TIMEOUT_S
            )
            return sum(message.ByteSize() for message in stream)

        self._timed("Ask", call)


class EmbedUser(GrpcUser):
    @task
    def embed_one(self) -> None:
        self.embed()


class SearchUser(GrpcUser):
    """Each mode in turn, the users starting at different modes, so that even a short run
    with three users measures all three."""

    _starts = itertools.count()

    def on_start(self) -> None:
        super().on_start()
        offset = next(SearchUser._starts) % len(MODES)
        order = list(MODES)
        self.modes = itertools.cycle(order[offset:] + order[:offset])

    @task
    def search_next_mode(self) -> None:
        self.search_in(next(self.modes))


class AskUser(GrpcUser):
    @task
    def ask_one(self) -> None:
        self.ask()


class MixedUser(GrpcUser):
    @task(4)
    def search_any(self) -> None:
        self.search_in(random.choice(list(MODES)))

    @task(2)
    def embed_one(self) -> None:
        self.embed()

    @task(1)
    def ask_one(self) -> None:
        self.ask()
