-- The sign-in page's state, shared by every replica, so a browser may start a
-- sign-in on one and come back to another.

-- Sign-ins in progress, keyed by SHA-256 of the OAuth `state`. The rest (nonce,
-- PKCE verifier, browser binding, provider, redirect URI) is sealed under the
-- state itself, which only the browser's redirect carries. Taken (deleted) on
-- use: a state is good for one callback.
CREATE TABLE oidc_pending (
    state_hash  BYTEA PRIMARY KEY,
    sealed      BYTEA NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- Signed-in browsers, keyed by SHA-256 of the session cookie. Who they are, the
-- form token and the provider's refresh token are sealed under the cookie value.
CREATE TABLE oidc_browser_sessions (
    id_hash      BYTEA PRIMARY KEY,
    sealed       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);
