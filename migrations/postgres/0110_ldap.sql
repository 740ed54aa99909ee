-- Refresh tokens (docker identity tokens) of directory ([[ldap]]) users. Directory
-- users have no row in `users`; they are named by directory and DN. Only the
-- SHA-256 of berth's token is stored; nothing here opens the directory.
CREATE TABLE ldap_sessions (
    token_hash   BYTEA   PRIMARY KEY,
    directory    TEXT    NOT NULL,
    dn           TEXT    NOT NULL,
    login        TEXT    NOT NULL,
    username     TEXT    NOT NULL,
    groups       TEXT    NOT NULL DEFAULT '[]',
    service      TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT  NOT NULL,
    checked_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL
);
CREATE INDEX ldap_sessions_owner ON ldap_sessions(directory, username);
