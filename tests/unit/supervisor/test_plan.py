"""`ragmesh up`'s replica plan refuses replicas that cannot share their store; the clients
dial its listeners on loopback when they listen on every address."""

from __future__ import annotations

import pytest

from ragmeshd.settings import Settings
from ragmeshd.supervisor.plan import check_replicas, reachable_endpoint


def settings(**search: str) -> Settings:
    return Settings.model_validate({"search": {"backend": "qdrant", **search}})


def test_one_process_owns_an_embedded_qdrant() -> None:
    for location in ("", "edge:/srv/edge", ":memory:", "/srv/qdrant"):
        with pytest.raises(ValueError, match="search=2: the embedded Qdrant is one process's"):
            check_replicas(settings(qdrant_location=location), {"search": 2})
        check_replicas(settings(qdrant_location=location), {"search": 1, "embeddings": 3})


def test_replicas_share_a_qdrant_server_or_postgresql() -> None:
    check_replicas(settings(qdrant_location="http://qdrant:6333"), {"search": 2})
    check_replicas(Settings.model_validate({}), {"search": 2})


def test_a_listener_on_every_address_is_dialled_on_loopback() -> None:
    assert reachable_endpoint("0.0.0.0:50051") == "127.0.0.1:50051"
    assert reachable_endpoint("[::]:50051") == "127.0.0.1:50051"
    assert reachable_endpoint("10.1.2.3:50051") == "10.1.2.3:50051"
