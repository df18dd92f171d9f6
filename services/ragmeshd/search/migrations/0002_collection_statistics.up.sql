-- Counts kept with each collection, updated in the same transaction as every write: the
-- document and passage counts GetCollection reports, and the total passage length (distinct
-- lexemes) that keyword search needs for BM25's average passage length.
ALTER TABLE search_collections
    ADD COLUMN document_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN passage_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN passage_terms bigint NOT NULL DEFAULT 0;

-- Backfill from the collections that already exist.
DO $$
DECLARE
    collection_id bigint;
BEGIN
    FOR collection_id IN SELECT id FROM search_collections LOOP
        EXECUTE format(
            'UPDATE search_collections SET'
            ' document_count = (SELECT count(*) FROM search_documents_%s),'
            ' passage_count = (SELECT count(*) FROM search_passages_%s),'
            ' passage_terms = (SELECT coalesce(sum(length(terms)), 0) FROM search_passages_%s)'
            ' WHERE id = %s',
            collection_id, collection_id, collection_id, collection_id);
    END LOOP;
END
$$;
