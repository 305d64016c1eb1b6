-- The first schema of the PostgreSQL store, the twin of sqlite-001: the same tables, columns
-- and constraints, with PostgreSQL's types. Migrations only ever add files.
CREATE TABLE devices (
    id BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    controller_id TEXT NOT NULL,
    token_sha256 TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    created BIGINT NOT NULL,
    last_seen BIGINT,
    registered_by TEXT NOT NULL,
    UNIQUE (tenant, controller_id)
);
CREATE TABLE packages (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    publisher TEXT,
    distribution_point TEXT,
    created BIGINT NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE artifacts (
    package_id BIGINT NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    sha1 TEXT NOT NULL,
    md5 TEXT NOT NULL,
    path TEXT,
    PRIMARY KEY (package_id, filename)
);
CREATE TABLE programs (
    id BIGSERIAL PRIMARY KEY,
    package_id BIGINT NOT NULL REFERENCES packages(id),
    name TEXT NOT NULL UNIQUE,
    command TEXT NOT NULL,
    platforms TEXT NOT NULL,
    max_run_time BIGINT NOT NULL,
    device_class TEXT NOT NULL
);
CREATE TABLE collections (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    rule TEXT NOT NULL
);
CREATE TABLE collection_members (
    collection_id BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    device_id BIGINT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    PRIMARY KEY (collection_id, device_id)
);
CREATE TABLE advertisements (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    program_id BIGINT NOT NULL REFERENCES programs(id),
    collection_id BIGINT NOT NULL REFERENCES collections(id),
    kind TEXT NOT NULL,
    start_time BIGINT NOT NULL,
    expires BIGINT,
    maintenance_window TEXT,
    created BIGINT NOT NULL,
    canceled BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE actions (
    id BIGSERIAL PRIMARY KEY,
    advertisement_id BIGINT NOT NULL REFERENCES advertisements(id),
    device_id BIGINT NOT NULL REFERENCES devices(id),
    status TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    last_code BIGINT,
    UNIQUE (advertisement_id, device_id)
);
CREATE INDEX actions_device ON actions(device_id);
CREATE TABLE status (
    id BIGSERIAL PRIMARY KEY,
    device_id BIGINT NOT NULL REFERENCES devices(id),
    action_id BIGINT REFERENCES actions(id),
    received BIGINT NOT NULL,
    source TEXT NOT NULL,
    execution TEXT,
    finished TEXT,
    message_id BIGINT,
    hresult TEXT,
    component TEXT,
    details TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX status_device ON status(device_id);
CREATE INDEX status_action ON status(action_id);
