-- Every change of the authentication generation is announced on the channel
-- berth_auth_generation when its transaction commits. A server listens there
-- and keeps the generation in memory instead of reading it for every burst of
-- requests; on a notification it reads the value again. The payload is empty,
-- so a transaction that moves the generation many times (a purge of refresh
-- tokens) sends one notification, not one per row.
CREATE FUNCTION berth_announce_auth_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('berth_auth_generation', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER auth_generation_announced AFTER UPDATE ON auth_generation
    FOR EACH STATEMENT EXECUTE FUNCTION berth_announce_auth_generation();
