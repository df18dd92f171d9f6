"""The search service: documents in PostgreSQL + pgvector or Qdrant, dense, keyword and
hybrid retrieval."""
