"""Retrieval quality studies (`ragmesh eval`): clients of a running search service."""
