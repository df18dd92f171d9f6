DROP TABLE coordinator_interactions;
