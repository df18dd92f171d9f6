"""The whole ragmesh API, for server reflection.

Every server serves reflection for every ragmesh service, so a client talking to Envoy can
list and describe the full API whichever replica answers the reflection call.
"""

from __future__ import annotations

from google.protobuf.descriptor import FileDescriptor

from ragmesh.coordinator.v1 import coordinator_service_pb2
from ragmesh.embeddings.v1 import embeddings_service_pb2
from ragmesh.llm.v1 import llm_service_pb2
from ragmesh.search.v1 import search_service_pb2

API_FILES: tuple[FileDescriptor, ...] = (
    embeddings_service_pb2.DESCRIPTOR,
    search_service_pb2.DESCRIPTOR,
    coordinator_service_pb2.DESCRIPTOR,
    llm_service_pb2.DESCRIPTOR,
)


def full_service_name(file: FileDescriptor, service: str) -> str:
    return str(file.services_by_name[service].full_name)


def api_service_names() -> list[str]:
    """Full names of every ragmesh gRPC service."""
    return [service.full_name for file in API_FILES for service in file.services_by_name.values()]


# Envoy's rate-limit protocol, which ragmesh's rate-limit service implements (the launcher
# checks its health by this name without importing the service).
RATELIMIT_SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
