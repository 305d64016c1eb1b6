-- The twin of sqlite-010: software updates (docs/software-updates.md), with PostgreSQL's
-- types.
CREATE TABLE update_repositories (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    source        TEXT NOT NULL,
    suite         TEXT NOT NULL,
    codename      TEXT NOT NULL,
    components    TEXT NOT NULL,
    architectures TEXT NOT NULL,
    security      BIGINT NOT NULL,
    signed_by     TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    release_date  BIGINT NOT NULL,
    generation    BIGINT NOT NULL,
    imported      BIGINT NOT NULL
);
CREATE TABLE updates (
    id            BIGSERIAL PRIMARY KEY,
    repository_id BIGINT NOT NULL REFERENCES update_repositories(id),
    package       TEXT NOT NULL,
    version       TEXT NOT NULL,
    arch          TEXT NOT NULL,
    source        TEXT NOT NULL,
    section       TEXT NOT NULL,
    priority      TEXT NOT NULL,
    size          BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    filename      TEXT NOT NULL,
    security      BIGINT NOT NULL,
    superseded_by BIGINT,
    approved      BIGINT,
    approved_by   TEXT,
    added         BIGINT NOT NULL,
    UNIQUE (repository_id, package, arch, version)
);
CREATE TABLE update_rules (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    repository    TEXT,
    security_only BIGINT NOT NULL,
    sections      TEXT NOT NULL,
    created       BIGINT NOT NULL
);
CREATE TABLE update_deployments (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    collection_id BIGINT NOT NULL REFERENCES collections(id),
    updates       TEXT NOT NULL,
    available     BIGINT NOT NULL,
    deadline      BIGINT NOT NULL,
    spread        BIGINT NOT NULL,
    reboot        TEXT NOT NULL,
    maintenance_window TEXT,
    created       BIGINT NOT NULL
);
-- One row per device and update that is not "not required": the absence of a row after a
-- scan is "not required", before any scan "unknown".
CREATE TABLE update_states (
    device_id     BIGINT NOT NULL REFERENCES devices(id),
    update_id     BIGINT NOT NULL REFERENCES updates(id),
    state         TEXT NOT NULL,
    installed     TEXT,
    reason        TEXT,
    updated       BIGINT NOT NULL,
    PRIMARY KEY (device_id, update_id)
);
CREATE INDEX update_states_by_update ON update_states (update_id, state);
CREATE TABLE update_scans (
    device_id     BIGINT PRIMARY KEY REFERENCES devices(id),
    serial        BIGINT NOT NULL,
    catalog       TEXT NOT NULL,
    scanned       BIGINT NOT NULL,
    -- The device's rows per state, kept with each report: the fleet's summary reads these.
    required      BIGINT NOT NULL DEFAULT 0,
    installed     BIGINT NOT NULL DEFAULT 0,
    unknown       BIGINT NOT NULL DEFAULT 0,
    in_progress   BIGINT NOT NULL DEFAULT 0,
    failed        BIGINT NOT NULL DEFAULT 0,
    pending_reboot BIGINT NOT NULL DEFAULT 0
);
