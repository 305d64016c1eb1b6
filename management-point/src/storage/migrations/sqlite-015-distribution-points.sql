-- Distribution points (docs/distribution-points.md): each with the hash of its credential and
-- the key its links are signed with, and its last report's health (JSON); and per package
-- and distribution point the source documents' state, source version and last copy.
CREATE TABLE distribution_points (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    url            TEXT NOT NULL,
    site           TEXT NOT NULL,
    boundaries     TEXT NOT NULL,
    pull_from      INTEGER REFERENCES distribution_points (id),
    rate_limit_kib INTEGER NOT NULL,
    copy_window    TEXT,
    token_sha256   TEXT NOT NULL UNIQUE,
    link_key       TEXT NOT NULL,
    created        INTEGER NOT NULL,
    health         TEXT NOT NULL
);
CREATE TABLE dp_content (
    dp_id          INTEGER NOT NULL REFERENCES distribution_points (id) ON DELETE CASCADE,
    package_id     INTEGER NOT NULL REFERENCES packages (id),
    state          TEXT NOT NULL,
    source_version TEXT NOT NULL,
    last_copied    INTEGER,
    reason         TEXT,
    since          INTEGER NOT NULL,
    refresh        INTEGER NOT NULL,
    validate       INTEGER NOT NULL,
    replaces       INTEGER,
    PRIMARY KEY (dp_id, package_id)
);
