-- Every Ask: the query, where it was routed and why, who answered, the context it was built
-- on, the answer and how long it took; then the feedback on it. `context` holds one object
-- per passage: {"collection", "document_id", "passage_index", "score"}.
CREATE TABLE coordinator_interactions (
    id uuid PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    query text NOT NULL,
    collections text[] NOT NULL,
    decision text NOT NULL CHECK (decision IN ('local', 'remote', 'none')),
    reason text NOT NULL,
    answered_by text NOT NULL CHECK (answered_by IN ('local', 'remote', 'none')),
    model text NOT NULL,
    fallback boolean NOT NULL,
    fallback_reason text NOT NULL,
    confidence double precision NOT NULL,
    context jsonb NOT NULL,
    answer text NOT NULL,
    latency_ms double precision NOT NULL,
    timings jsonb NOT NULL,
    rating smallint CHECK (rating BETWEEN -1 AND 1),
    outcome text NOT NULL DEFAULT '',
    value_score double precision NOT NULL DEFAULT 0,
    feedback_at timestamptz
);

-- Export pages through interactions by (created_at, id), optionally by rating.
CREATE INDEX coordinator_interactions_created ON coordinator_interactions (created_at, id);
CREATE INDEX coordinator_interactions_rating ON coordinator_interactions (rating, created_at, id);
