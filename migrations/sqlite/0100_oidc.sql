-- Federated (OIDC) state. Independent of the local tables: federated users have no
-- row in `users`; they are named by provider and the provider's `sub`.

-- Refresh tokens (docker identity tokens) issued to federated users. `idp_refresh`
-- is the provider's refresh token, sealed with a key derived from berth's token,
-- which is stored only as a SHA-256 hash: the database alone cannot open it.
CREATE TABLE oidc_sessions (
    token_hash   BLOB    PRIMARY KEY,
    provider     TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    username     TEXT    NOT NULL,
    groups       TEXT    NOT NULL DEFAULT '[]',
    service      TEXT    NOT NULL,
    idp_refresh  BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    checked_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX oidc_sessions_owner ON oidc_sessions(provider, subject);

-- Tokens minted on the sign-in page: a federated user's docker password, limited
-- to some actions, expiring. Sealed provider refresh token as above.
CREATE TABLE oidc_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash   BLOB    NOT NULL UNIQUE,
    provider     TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    username     TEXT    NOT NULL,
    groups       TEXT    NOT NULL DEFAULT '[]',
    description  TEXT    NOT NULL DEFAULT '',
    actions      TEXT    NOT NULL DEFAULT '[]',
    idp_refresh  BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    checked_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX oidc_tokens_owner ON oidc_tokens(provider, subject);
