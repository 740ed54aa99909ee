-- A counter that every change able to revoke access moves forward: a user's
-- epoch (password, groups, disabled), a deleted user, a deleted refresh token.
-- Cached credentials stay good while it stands still, so berth reads one number
-- per burst of requests instead of one row per request. Triggers keep it in step
-- with every writer: this process, another replica, or the CLI.
CREATE TABLE auth_generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO auth_generation (id, value) VALUES (1, 0);

CREATE TRIGGER users_epoch_moves_generation AFTER UPDATE OF epoch ON users
BEGIN
    UPDATE auth_generation SET value = value + 1 WHERE id = 1;
END;

CREATE TRIGGER users_delete_moves_generation AFTER DELETE ON users
BEGIN
    UPDATE auth_generation SET value = value + 1 WHERE id = 1;
END;

CREATE TRIGGER refresh_delete_moves_generation AFTER DELETE ON refresh_tokens
BEGIN
    UPDATE auth_generation SET value = value + 1 WHERE id = 1;
END;
