"""Document stores behind the search service; all implement backends.base.SearchBackend."""
