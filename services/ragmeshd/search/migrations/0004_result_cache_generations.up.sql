-- The search result cache (services/ragmeshd/search/result_cache.py): one counter per collection,
-- raised after every write to it (upsert, delete, drop, create). Every replica reads it per
-- query and keys its cached results by it, so a write is seen by the next search on any
-- replica.
CREATE TABLE IF NOT EXISTS search_result_generations (
    collection text PRIMARY KEY,
    generation bigint NOT NULL
);
