-- Announce every committed change of tenants on channel dbtools_tenants, so that caches of tenants in any process (dbtools.cache) drop what changed, whoever changed it.
-- depends: 0005_audit-tenant-changes

/*
  The protocol, which dbtools.cache relies on and any other listener may too:
  - channel dbtools_tenants;
  - payload: the slugs of the tenants whose row changed, separated by single spaces, at most 100
    in one notification (a payload must stay under 8000 bytes; a slug has at most 50); a rename
    sends the old slug and the new one; TRUNCATE sends '*', meaning every tenant.
  NOTIFY is transactional: listeners hear of a change when its transaction commits, and never of
  one rolled back; PostgreSQL sends a payload repeated within one transaction only once.

  Statement-level triggers with transition tables, rather than one trigger per row: an import of
  100000 rows sends 1000 notifications, not 100000, and an UPDATE that changes nothing (suspending
  a suspended tenant) sends none. A transition table may serve one event only, hence one trigger
  per event, all calling one function.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE FUNCTION tg_tenants__notify() RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed text[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('dbtools_tenants', '*');
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        changed := ARRAY(SELECT DISTINCT slug FROM new_rows);
    ELSIF TG_OP = 'DELETE' THEN
        changed := ARRAY(SELECT DISTINCT slug FROM old_rows);
    ELSE
        -- A row the UPDATE left as it was is in both transition tables and cancels out; a
        -- changed row leaves its old slug in the first difference and its new one in the second.
        changed := ARRAY(
            SELECT slug FROM (SELECT * FROM old_rows EXCEPT SELECT * FROM new_rows) AS before
            UNION
            SELECT slug FROM (SELECT * FROM new_rows EXCEPT SELECT * FROM old_rows) AS after
        );
    END IF;
    FOR batch IN 0 .. (cardinality(changed) + 99) / 100 - 1 LOOP
        PERFORM pg_notify('dbtools_tenants', array_to_string(changed[batch * 100 + 1 : batch * 100 + 100], ' '));
    END LOOP;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION tg_tenants__notify() IS
    'AFTER ... FOR EACH STATEMENT trigger on tenants: NOTIFY dbtools_tenants with the slugs of the changed rows, 100 at most per notification, or ''*'' for TRUNCATE.';

-- A trigger function runs only as a trigger; nobody needs to call this one otherwise.
REVOKE EXECUTE ON FUNCTION tg_tenants__notify() FROM PUBLIC;

CREATE TRIGGER tenants_notify_insert
    AFTER INSERT ON tenants
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION tg_tenants__notify();

CREATE TRIGGER tenants_notify_update
    AFTER UPDATE ON tenants
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION tg_tenants__notify();

CREATE TRIGGER tenants_notify_delete
    AFTER DELETE ON tenants
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION tg_tenants__notify();

CREATE TRIGGER tenants_notify_truncate
    AFTER TRUNCATE ON tenants
    FOR EACH STATEMENT
    EXECUTE FUNCTION tg_tenants__notify();

COMMENT ON TRIGGER tenants_notify_insert ON tenants IS
    'NOTIFY dbtools_tenants with the slugs of the inserted tenants (see tg_tenants__notify).';
COMMENT ON TRIGGER tenants_notify_update ON tenants IS
    'NOTIFY dbtools_tenants with the old and new slugs of the changed tenants (see tg_tenants__notify).';
COMMENT ON TRIGGER tenants_notify_delete ON tenants IS
    'NOTIFY dbtools_tenants with the slugs of the deleted tenants (see tg_tenants__notify).';
COMMENT ON TRIGGER tenants_notify_truncate ON tenants IS
    'NOTIFY dbtools_tenants with ''*'': every tenant is gone (see tg_tenants__notify).';
