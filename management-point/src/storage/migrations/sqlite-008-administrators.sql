-- The console's administrators: a name and an Argon2id password hash (a PHC string).
CREATE TABLE administrators (
    name    TEXT PRIMARY KEY,
    hash    TEXT NOT NULL,
    created INTEGER NOT NULL
);
