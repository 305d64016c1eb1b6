-- Configuration items: the ones a configuration package signs (kept with the package), and the
-- catalog an administrator adds items to before packaging them with dmpack.
ALTER TABLE packages ADD COLUMN config_items TEXT NOT NULL DEFAULT '[]';
CREATE TABLE config_items (
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,
    item    TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
