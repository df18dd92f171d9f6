DROP INDEX coordinator_interactions_owner;
ALTER TABLE coordinator_interactions DROP COLUMN owner_key_id;
