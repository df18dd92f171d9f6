"""protoc plugins run by `make generate` (never imported by a server)."""
