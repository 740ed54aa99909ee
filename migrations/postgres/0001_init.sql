-- Local accounts. `epoch` changes whenever the password, groups or status change,
-- so cached credential checks can tell they are stale.
CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    groups        TEXT    NOT NULL DEFAULT '[]',
    disabled      BIGINT NOT NULL DEFAULT 0,
    epoch         BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Refresh tokens, stored only as SHA-256 hashes of the opaque token.
CREATE TABLE refresh_tokens (
    token_hash   BYTEA    PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    service      TEXT    NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);
