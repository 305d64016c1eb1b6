-- The twin of sqlite-007: configuration items, in packages and in the catalog.
ALTER TABLE packages ADD COLUMN config_items TEXT NOT NULL DEFAULT '[]';
CREATE TABLE config_items (
    name    TEXT NOT NULL,
    version BIGINT NOT NULL,
    item    TEXT NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
