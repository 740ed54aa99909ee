-- Machine accounts for CI. The secret is 256 random bits, stored as SHA-256.
CREATE TABLE robots (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    secret_hash  BLOB    NOT NULL,
    groups       TEXT    NOT NULL DEFAULT '[]',
    description  TEXT    NOT NULL DEFAULT '',
    disabled     INTEGER NOT NULL DEFAULT 0,
    epoch        INTEGER NOT NULL DEFAULT 0,
    expires_at   INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    last_used_at INTEGER
);

-- Personal access tokens: a user's password substitute, limited to some scopes.
CREATE TABLE access_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    token_hash   BLOB    NOT NULL UNIQUE,
    limits       TEXT    NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    UNIQUE (user_id, name)
);

-- One row per token decision. Never a secret, token or hash.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    request_id TEXT    NOT NULL,
    client     TEXT    NOT NULL,
    account    TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    via        TEXT    NOT NULL,
    service    TEXT    NOT NULL,
    requested  TEXT    NOT NULL,
    granted    TEXT    NOT NULL,
    denied     TEXT    NOT NULL,
    rules      TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    latency_us INTEGER NOT NULL
);
CREATE INDEX audit_log_at ON audit_log(at);
CREATE INDEX audit_log_account ON audit_log(account, at);

-- Failed sign-ins per account and per client address, in fixed windows.
CREATE TABLE login_failures (
    key          TEXT    PRIMARY KEY,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL
);
