-- The passages' term index without a pending list: with one, the write that finds it full
-- merges all of it into the index, which under load ran past the statement timeout; without
-- it every write pays its own bounded share. New collections get it from their DDL.
DO $$
DECLARE
    id bigint;
BEGIN
    FOR id IN SELECT c.id FROM search_collections AS c LOOP
        EXECUTE format('ALTER INDEX search_passages_%1$s_terms SET (fastupdate = off)', id);
    END LOOP;
END
$$;
