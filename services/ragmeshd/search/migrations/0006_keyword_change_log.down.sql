DO $$
DECLARE
    id bigint;
BEGIN
    FOR id IN SELECT c.id FROM search_collections AS c LOOP
        EXECUTE format('DROP TABLE IF EXISTS search_changes_%1$s', id);
    END LOOP;
END
$$;

ALTER TABLE search_collections DROP COLUMN write_version;
