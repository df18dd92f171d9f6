"""ragmesh: embeddings, search and a RAG coordinator as gRPC services behind Envoy."""

__version__ = "0.1.0"
