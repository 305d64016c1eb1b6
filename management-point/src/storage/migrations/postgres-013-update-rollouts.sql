-- The twin of sqlite-013: a rollout releases an advertisement or a (held) update deployment.
ALTER TABLE update_deployments ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rollouts ALTER COLUMN advertisement_id DROP NOT NULL;
ALTER TABLE rollouts ADD COLUMN update_deployment_id BIGINT UNIQUE REFERENCES update_deployments(id);
ALTER TABLE rollouts ADD CONSTRAINT rollouts_one_target
    CHECK ((advertisement_id IS NULL) <> (update_deployment_id IS NULL));
CREATE TABLE rollout_samples (
    rollout_id  BIGINT NOT NULL REFERENCES rollouts(id),
    time        BIGINT NOT NULL,
    group_index BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    installing  BIGINT NOT NULL,
    soaking     BIGINT NOT NULL,
    succeeded   BIGINT NOT NULL,
    failed      BIGINT NOT NULL
);
CREATE INDEX rollout_samples_by_rollout ON rollout_samples (rollout_id, time);
