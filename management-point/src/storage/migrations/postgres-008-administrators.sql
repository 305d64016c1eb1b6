-- The twin of sqlite-008: the console's administrators.
CREATE TABLE administrators (
    name    TEXT PRIMARY KEY,
    hash    TEXT NOT NULL,
    created BIGINT NOT NULL
);
