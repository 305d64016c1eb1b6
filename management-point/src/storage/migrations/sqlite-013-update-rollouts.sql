-- Rollouts of software update deployments (docs/rollouts.md). A rollout releases an
-- advertisement or an update deployment: exactly one of advertisement_id and
-- update_deployment_id. A held update deployment is offered to no device but through its
-- rollout. SQLite cannot drop a NOT NULL, so the rollout tables are made again with the same
-- rows: the children first dropped, then the parent, so no foreign key is ever broken; the
-- renames carry the references over.
ALTER TABLE update_deployments ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
CREATE TABLE rollouts_013 (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    advertisement_id     INTEGER UNIQUE REFERENCES advertisements(id),
    update_deployment_id INTEGER UNIQUE REFERENCES update_deployments(id),
    spec                 TEXT NOT NULL,
    state                TEXT NOT NULL,
    current_group        INTEGER NOT NULL DEFAULT 0,
    reason               TEXT,
    created              INTEGER NOT NULL,
    updated              INTEGER NOT NULL,
    CHECK ((advertisement_id IS NULL) <> (update_deployment_id IS NULL))
);
INSERT INTO rollouts_013 (id, name, advertisement_id, spec, state, current_group, reason, created, updated)
    SELECT id, name, advertisement_id, spec, state, current_group, reason, created, updated FROM rollouts;
CREATE TABLE rollout_members_013 (
    rollout_id   INTEGER NOT NULL REFERENCES rollouts_013(id),
    device_id    INTEGER NOT NULL REFERENCES devices(id),
    group_index  INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, device_id)
);
INSERT INTO rollout_members_013 SELECT rollout_id, device_id, group_index, acknowledged FROM rollout_members;
CREATE TABLE rollout_events_013 (
    id         INTEGER PRIMARY KEY,
    rollout_id INTEGER NOT NULL REFERENCES rollouts_013(id),
    time       INTEGER NOT NULL,
    text       TEXT NOT NULL
);
INSERT INTO rollout_events_013 SELECT id, rollout_id, time, text FROM rollout_events;
DROP TABLE rollout_events;
DROP TABLE rollout_members;
DROP TABLE rollouts;
ALTER TABLE rollouts_013 RENAME TO rollouts;
ALTER TABLE rollout_members_013 RENAME TO rollout_members;
ALTER TABLE rollout_events_013 RENAME TO rollout_events;
CREATE INDEX rollout_events_by_rollout ON rollout_events (rollout_id, id);
-- Each group's counts over time, for the console's plots: a row whenever the counts of the
-- group the gates evaluate change.
CREATE TABLE rollout_samples (
    rollout_id  INTEGER NOT NULL REFERENCES rollouts(id),
    time        INTEGER NOT NULL,
    group_index INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    installing  INTEGER NOT NULL,
    soaking     INTEGER NOT NULL,
    succeeded   INTEGER NOT NULL,
    failed      INTEGER NOT NULL
);
CREATE INDEX rollout_samples_by_rollout ON rollout_samples (rollout_id, time);
