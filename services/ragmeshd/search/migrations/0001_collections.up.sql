-- The catalog of collections. Each collection's documents and passages live in two tables of
-- their own, search_documents_<id> and search_passages_<id>, created with the collection (the
-- vector column's dimension and the HNSW index settings are per collection).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE search_collections (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    dimensions integer NOT NULL CHECK (dimensions BETWEEN 1 AND 2000),
    embedding_model text NOT NULL,
    hnsw_m integer NOT NULL,
    hnsw_ef_construction integer NOT NULL,
    text_search_config regconfig NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
