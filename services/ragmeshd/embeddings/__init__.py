"""The embeddings service: a sentence-transformers model behind a dynamic batcher."""
