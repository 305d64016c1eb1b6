-- Phased rollouts (docs/rollouts.md): an advertisement released to its collection group by
-- group. spec is the rollout's JSON (split, gates, soak, silent_after, start_at,
-- joins_per_minute); a member is released once its group_index is at most current_group of a
-- started rollout; an acknowledged member (a failure an administrator resumed past) counts no
-- more. The events are the rollout's log.
CREATE TABLE rollouts (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    advertisement_id INTEGER NOT NULL UNIQUE REFERENCES advertisements(id),
    spec             TEXT NOT NULL,
    state            TEXT NOT NULL,
    current_group    INTEGER NOT NULL DEFAULT 0,
    reason           TEXT,
    created          INTEGER NOT NULL,
    updated          INTEGER NOT NULL
);
CREATE TABLE rollout_members (
    rollout_id   INTEGER NOT NULL REFERENCES rollouts(id),
    device_id    INTEGER NOT NULL REFERENCES devices(id),
    group_index  INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE TABLE rollout_events (
    id         INTEGER PRIMARY KEY,
    rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
    time       INTEGER NOT NULL,
    text       TEXT NOT NULL
);
CREATE INDEX rollout_events_by_rollout ON rollout_events (rollout_id, id);
