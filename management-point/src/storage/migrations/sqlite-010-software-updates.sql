-- Software updates (docs/software-updates.md): Debian repositories imported into the catalog,
-- their package versions as updates, approval rules, update deployments, and what each
-- device's scan found. JSON columns hold short lists.
CREATE TABLE update_repositories (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    source        TEXT NOT NULL,
    suite         TEXT NOT NULL,
    codename      TEXT NOT NULL,
    components    TEXT NOT NULL,
    architectures TEXT NOT NULL,
    security      INTEGER NOT NULL,
    signed_by     TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    release_date  INTEGER NOT NULL,
    generation    INTEGER NOT NULL,
    imported      INTEGER NOT NULL
);
CREATE TABLE updates (
    id            INTEGER PRIMARY KEY,
    repository_id INTEGER NOT NULL REFERENCES update_repositories(id),
    package       TEXT NOT NULL,
    version       TEXT NOT NULL,
    arch          TEXT NOT NULL,
    source        TEXT NOT NULL,
    section       TEXT NOT NULL,
    priority      TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    filename      TEXT NOT NULL,
    security      INTEGER NOT NULL,
    superseded_by INTEGER,
    approved      INTEGER,
    approved_by   TEXT,
    added         INTEGER NOT NULL,
    UNIQUE (repository_id, package, arch, version)
);
CREATE TABLE update_rules (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    repository    TEXT,
    security_only INTEGER NOT NULL,
    sections      TEXT NOT NULL,
    created       INTEGER NOT NULL
);
CREATE TABLE update_deployments (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    updates       TEXT NOT NULL,
    available     INTEGER NOT NULL,
    deadline      INTEGER NOT NULL,
    spread        INTEGER NOT NULL,
    reboot        TEXT NOT NULL,
    maintenance_window TEXT,
    created       INTEGER NOT NULL
);
-- One row per device and update that is not "not required": the absence of a row after a
-- scan is "not required", before any scan "unknown".
CREATE TABLE update_states (
    device_id     INTEGER NOT NULL REFERENCES devices(id),
    update_id     INTEGER NOT NULL REFERENCES updates(id),
    state         TEXT NOT NULL,
    installed     TEXT,
    reason        TEXT,
    updated       INTEGER NOT NULL,
    PRIMARY KEY (device_id, update_id)
);
CREATE INDEX update_states_by_update ON update_states (update_id, state);
CREATE TABLE update_scans (
    device_id     INTEGER PRIMARY KEY REFERENCES devices(id),
    serial        INTEGER NOT NULL,
    catalog       TEXT NOT NULL,
    scanned       INTEGER NOT NULL,
    -- The device's rows per state, kept with each report: the fleet's summary reads these.
    required      INTEGER NOT NULL DEFAULT 0,
    installed     INTEGER NOT NULL DEFAULT 0,
    unknown       INTEGER NOT NULL DEFAULT 0,
    in_progress   INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    pending_reboot INTEGER NOT NULL DEFAULT 0
);
