DO $$
DECLARE
    id bigint;
BEGIN
    FOR id IN SELECT c.id FROM search_collections AS c LOOP
        EXECUTE format('ALTER INDEX search_passages_%1$s_terms RESET (fastupdate)', id);
    END LOOP;
END
$$;
