-- Undo 0009_check-reserved-slugs-per-statement: inserted slugs are checked row by row by tenants_reserved_slug again, and tg_tenants__notify is 0006's.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP TRIGGER tenants_admit_insert ON tenants;

DROP TRIGGER tenants_reserved_slug ON tenants;

CREATE TRIGGER tenants_reserved_slug
    BEFORE INSERT OR UPDATE OF slug ON tenants
    FOR EACH ROW
    EXECUTE FUNCTION tg_tenants__reserved_slug();

COMMENT ON TRIGGER tenants_reserved_slug ON tenants IS
    'Refuses a slug listed in reserved_slugs on INSERT, and on an UPDATE that changes the slug (see tg_tenants__reserved_slug).';

COMMENT ON FUNCTION tg_tenants__reserved_slug() IS
    'BEFORE INSERT OR UPDATE OF slug trigger on tenants: refuses a slug listed in reserved_slugs (check_violation, tenants_slug_reserved).';

COMMENT ON FUNCTION tg_tenants__audit() IS
    'AFTER INSERT OR UPDATE OR DELETE trigger on tenants: records each change in tenant_events (SECURITY DEFINER, so writers of tenants need no privilege on tenant_events).';

-- Nothing but the trigger dropped above calls this function.
-- squawk-ignore ban-drop-function
DROP FUNCTION tg_tenants__reserved_slug_insert();

CREATE OR REPLACE FUNCTION tg_tenants__notify() RETURNS trigger
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
