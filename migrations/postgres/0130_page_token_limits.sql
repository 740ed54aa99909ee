-- Repository limits of tokens minted on the sign-in page, as a JSON array of
-- `repository:NAME:ACTIONS` strings (the syntax of `berth token create --limit`).
-- Empty: the token is limited by its actions only.
ALTER TABLE oidc_tokens ADD COLUMN limits TEXT NOT NULL DEFAULT '[]';
