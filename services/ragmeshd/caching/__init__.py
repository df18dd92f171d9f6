"""Caches shared by the services: a byte-bounded in-memory LRU and a shared Redis tier."""
