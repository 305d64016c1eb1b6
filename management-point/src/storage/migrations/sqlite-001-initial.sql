-- The first schema of the SQLite store. Migrations only ever add files; never edit one
-- that has shipped.
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    controller_id TEXT NOT NULL,
    token_sha256 TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    created INTEGER NOT NULL,
    last_seen INTEGER,
    registered_by TEXT NOT NULL,
    UNIQUE (tenant, controller_id)
);
CREATE TABLE packages (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    publisher TEXT,
    distribution_point TEXT,
    created INTEGER NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE artifacts (
    package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    sha1 TEXT NOT NULL,
    md5 TEXT NOT NULL,
    path TEXT,
    PRIMARY KEY (package_id, filename)
);
CREATE TABLE programs (
    id INTEGER PRIMARY KEY,
    package_id INTEGER NOT NULL REFERENCES packages(id),
    name TEXT NOT NULL UNIQUE,
    command TEXT NOT NULL,
    platforms TEXT NOT NULL,
    max_run_time INTEGER NOT NULL,
    device_class TEXT NOT NULL
);
CREATE TABLE collections (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    rule TEXT NOT NULL
);
CREATE TABLE collection_members (
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    PRIMARY KEY (collection_id, device_id)
);
CREATE TABLE advertisements (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    program_id INTEGER NOT NULL REFERENCES programs(id),
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    kind TEXT NOT NULL,
    start_time INTEGER NOT NULL,
    expires INTEGER,
    maintenance_window TEXT,
    created INTEGER NOT NULL,
    canceled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE actions (
    id INTEGER PRIMARY KEY,
    advertisement_id INTEGER NOT NULL REFERENCES advertisements(id),
    device_id INTEGER NOT NULL REFERENCES devices(id),
    status TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    last_code INTEGER,
    UNIQUE (advertisement_id, device_id)
);
CREATE INDEX actions_device ON actions(device_id);
CREATE TABLE status (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    action_id INTEGER REFERENCES actions(id),
    received INTEGER NOT NULL,
    source TEXT NOT NULL,
    execution TEXT,
    finished TEXT,
    message_id INTEGER,
    hresult TEXT,
    component TEXT,
    details TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX status_device ON status(device_id);
CREATE INDEX status_action ON status(action_id);
