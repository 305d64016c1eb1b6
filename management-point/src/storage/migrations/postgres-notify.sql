-- Not a migration: run at every start, after them. Every change the in-memory views hold
-- (devices but their last-seen times, packages, programs, collections, advertisements,
-- rollouts, actions, revocations, CRLs, administrators) notifies channel dm_changes with the writer's
-- application_name, so each dmmp instance hears the others' changes and not its own. A new or
-- changed action (a poll, feedback) or device (a registration, inventory) says which,
-- "<writer> action <id>" or "<writer> device <id>", so the others read that row alone instead
-- of reloading everything.
CREATE OR REPLACE FUNCTION dm_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dm_changes', current_setting('application_name'));
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION dm_notify_device() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dm_changes', current_setting('application_name') || ' device ' || NEW.id);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS dm_devices_changed ON devices;
CREATE OR REPLACE TRIGGER dm_device_rows
    AFTER INSERT OR UPDATE OF tenant, controller_id, token_sha256, attributes, registered_by,
        auto_confirm, cert_sha256
    ON devices FOR EACH ROW EXECUTE FUNCTION dm_notify_device();
CREATE OR REPLACE TRIGGER dm_device_deletes AFTER DELETE
    ON devices FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_packages_changed AFTER INSERT OR UPDATE OR DELETE
    ON packages FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_artifacts_changed AFTER INSERT OR UPDATE OR DELETE
    ON artifacts FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_programs_changed AFTER INSERT OR UPDATE OR DELETE
    ON programs FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_collections_changed AFTER INSERT OR UPDATE OR DELETE
    ON collections FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_members_changed AFTER INSERT OR UPDATE OR DELETE
    ON collection_members FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_advertisements_changed AFTER INSERT OR UPDATE OR DELETE
    ON advertisements FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_rollouts_changed AFTER INSERT OR UPDATE OR DELETE
    ON rollouts FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_rollout_members_changed AFTER INSERT OR UPDATE OR DELETE
    ON rollout_members FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE FUNCTION dm_notify_action() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dm_changes', current_setting('application_name') || ' action ' || NEW.id);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS dm_actions_changed ON actions;
CREATE OR REPLACE TRIGGER dm_action_rows AFTER INSERT OR UPDATE
    ON actions FOR EACH ROW EXECUTE FUNCTION dm_notify_action();
CREATE OR REPLACE TRIGGER dm_action_deletes AFTER DELETE
    ON actions FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_revoked_changed AFTER INSERT OR UPDATE OR DELETE
    ON revoked_certificates FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_crls_changed AFTER INSERT OR UPDATE OR DELETE
    ON crls FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
-- The console ends an administrator's sessions when their password changes or they are
-- removed: every instance's view holds the administrators.
CREATE OR REPLACE TRIGGER dm_administrators_changed AFTER INSERT OR UPDATE OR DELETE
    ON administrators FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
-- Software updates: the repositories (an import moves their generation) and deployments the
-- view holds; updates themselves and devices' states are read when needed.
CREATE OR REPLACE TRIGGER dm_update_repositories_changed AFTER INSERT OR UPDATE OR DELETE
    ON update_repositories FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
CREATE OR REPLACE TRIGGER dm_update_deployments_changed AFTER INSERT OR UPDATE OR DELETE
    ON update_deployments FOR EACH STATEMENT EXECUTE FUNCTION dm_notify();
