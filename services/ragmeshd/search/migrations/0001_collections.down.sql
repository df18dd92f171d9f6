-- Drops every collection with its tables. The vector extension stays: other schemas in the
-- database may use it.
DO $$
DECLARE
    collection_id bigint;
BEGIN
    FOR collection_id IN SELECT id FROM search_collections LOOP
        EXECUTE format('DROP TABLE IF EXISTS search_passages_%s, search_documents_%s',
                       collection_id, collection_id);
    END LOOP;
END
$$;

DROP TABLE search_collections;
