-- Who asked (issue 24): the id of the API key behind each Ask ('' for interactions stored
-- before owners existed, or with keys turned off). Reading, rating and exporting another
-- key's interactions needs interactions.export or admin. Expand-only: a previous release
-- keeps inserting without the column.
ALTER TABLE coordinator_interactions ADD COLUMN owner_key_id text NOT NULL DEFAULT '';
CREATE INDEX coordinator_interactions_owner
    ON coordinator_interactions (owner_key_id, created_at, id);
