-- The twin of sqlite-012: phased rollouts (docs/rollouts.md), with PostgreSQL's types.
CREATE TABLE rollouts (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    advertisement_id BIGINT NOT NULL UNIQUE REFERENCES advertisements(id),
    spec             TEXT NOT NULL,
    state            TEXT NOT NULL,
    current_group    BIGINT NOT NULL DEFAULT 0,
    reason           TEXT,
    created          BIGINT NOT NULL,
    updated          BIGINT NOT NULL
);
CREATE TABLE rollout_members (
    rollout_id   BIGINT NOT NULL REFERENCES rollouts(id),
    device_id    BIGINT NOT NULL REFERENCES devices(id),
    group_index  BIGINT NOT NULL,
    acknowledged BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE TABLE rollout_events (
    id         BIGSERIAL PRIMARY KEY,
    rollout_id BIGINT NOT NULL REFERENCES rollouts(id),
    time       BIGINT NOT NULL,
    text       TEXT NOT NULL
);
CREATE INDEX rollout_events_by_rollout ON rollout_events (rollout_id, id);
