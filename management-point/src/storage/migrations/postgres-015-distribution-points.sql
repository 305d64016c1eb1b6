-- The twin of sqlite-015: distribution points and the packages each holds.
CREATE TABLE distribution_points (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    url            TEXT NOT NULL,
    site           TEXT NOT NULL,
    boundaries     TEXT NOT NULL,
    pull_from      BIGINT REFERENCES distribution_points (id),
    rate_limit_kib BIGINT NOT NULL,
    copy_window    TEXT,
    token_sha256   TEXT NOT NULL UNIQUE,
    link_key       TEXT NOT NULL,
    created        BIGINT NOT NULL,
    health         TEXT NOT NULL
);
CREATE TABLE dp_content (
    dp_id          BIGINT NOT NULL REFERENCES distribution_points (id) ON DELETE CASCADE,
    package_id     BIGINT NOT NULL REFERENCES packages (id),
    state          TEXT NOT NULL,
    source_version TEXT NOT NULL,
    last_copied    BIGINT,
    reason         TEXT,
    since          BIGINT NOT NULL,
    refresh        BIGINT NOT NULL,
    validate       BIGINT NOT NULL,
    replaces       BIGINT,
    PRIMARY KEY (dp_id, package_id)
);
