-- The in-memory keyword index of each search replica (services/ragmeshd/search/bm25_index.py) follows
-- the collection's writes through a version and a change log kept in the write's own
-- transaction: every upsert or delete raises search_collections.write_version by one and
-- records the ids of the documents it touched under the new version in
-- search_changes_<id>. A replica whose index is at version v reads the documents changed
-- after v (and their current passages) in one snapshot with the version, so a search after
-- an acknowledged write sees it on every replica. Only the last entries are kept (the
-- writer trims them); a replica further behind rebuilds its index from the passages.
ALTER TABLE search_collections ADD COLUMN write_version bigint NOT NULL DEFAULT 0;

DO $$
DECLARE
    id bigint;
BEGIN
    FOR id IN SELECT c.id FROM search_collections AS c LOOP
        EXECUTE format($sql$
            CREATE TABLE search_changes_%1$s (
                version bigint NOT NULL,
                document_id text NOT NULL
            );
            CREATE INDEX search_changes_%1$s_version ON search_changes_%1$s (version);
        $sql$, id);
    END LOOP;
END
$$;
