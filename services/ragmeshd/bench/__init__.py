"""The `ragmesh bench` measurements: clients of a running mesh (never imported by a server)."""
