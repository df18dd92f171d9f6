"""Per-key rate limits for the whole mesh: Envoy's rate-limit service (see docs/security.md)."""
