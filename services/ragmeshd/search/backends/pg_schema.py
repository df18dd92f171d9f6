"""The pgvector backend's per-collection tables: their names and the DDL that creates them
(the catalog table and later changes to existing collections are migrations)."""

from __future__ import annotations

from ragmeshd.search.backends.pg_keyword_index import changes_ddl
from ragmeshd.search.backends.pg_keywords import keyword_ddl, terms_table
from ragmeshd.search.records import CollectionSpec


def documents_table(collection_id: int) -> str:
    return f"search_documents_{int(collection_id)}"


def passages_table(collection_id: int) -> str:
    return f"search_passages_{int(collection_id)}"


def collection_ddl(collection_id: int, spec: CollectionSpec) -> str:
    documents_name = documents_table(collection_id)
    passages_name = passages_table(collection_id)
    return f"""
        CREATE TABLE {documents_name} (
            id text PRIMARY KEY,
            text text NOT NULL,
            metadata jsonb NOT NULL,
            passage_count integer NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX {documents_name}_metadata ON {documents_name}
            USING gin (metadata jsonb_path_ops);
        CREATE TABLE {passages_name} (
            document_id text NOT NULL REFERENCES {documents_name} (id) ON DELETE CASCADE,
            passage_index integer NOT NULL,
            text text NOT NULL,
            metadata jsonb NOT NULL,
            embedding vector({int(spec.dimensions)}) NOT NULL,
            terms integer[] STORAGE PLAIN NOT NULL,
            frequencies integer[] STORAGE PLAIN NOT NULL,
            length integer NOT NULL,
            PRIMARY KEY (document_id, passage_index)
        );
        CREATE INDEX {passages_name}_embedding ON {passages_name}
            USING hnsw (embedding vector_cosine_ops)
            WITH (m = {int(spec.hnsw_m)}, ef_construction = {int(spec.hnsw_ef_construction)});
        {keyword_ddl(passages_name, terms_table(collection_id))}
        {changes_ddl(collection_id)}
        CREATE INDEX {passages_name}_metadata ON {passages_name}
            USING gin (metadata jsonb_path_ops);
    """
