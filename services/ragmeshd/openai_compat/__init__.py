"""The OpenAI-compatible HTTP adapter: /v1/embeddings, /v1/models and /v1/chat/completions
served from the embeddings service and the coordinator's Ask, behind Envoy."""
