-- Back to PostgreSQL's own english text search: a generated tsvector per passage, document
-- frequencies counted at query time, passage_terms as the number of distinct lexemes.
ALTER TABLE search_collections ADD COLUMN text_search_config regconfig NOT NULL DEFAULT 'english';
ALTER TABLE search_collections ALTER COLUMN text_search_config DROP DEFAULT;

DO $$
DECLARE
    id bigint;
BEGIN
    FOR id IN SELECT c.id FROM search_collections AS c LOOP
        EXECUTE format($sql$
            DROP TABLE search_terms_%1$s;
            ALTER TABLE search_passages_%1$s
                DROP COLUMN terms, DROP COLUMN frequencies, DROP COLUMN length;
            ALTER TABLE search_passages_%1$s ADD COLUMN terms tsvector
                GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED;
            CREATE INDEX search_passages_%1$s_terms ON search_passages_%1$s USING gin (terms);
            UPDATE search_collections SET passage_terms =
                (SELECT coalesce(sum(length(terms)), 0) FROM search_passages_%1$s)
                WHERE search_collections.id = %1$s;
        $sql$, id);
    END LOOP;
END
$$;
