"""Envoy's configuration: rendering, limits, SDS, the admin client."""
