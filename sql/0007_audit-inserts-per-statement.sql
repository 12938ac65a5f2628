-- Record the creation of tenants with one INSERT per statement instead of one trigger call per row, so that importing many tenants is not slowed down threefold by its audit.
-- depends: 0006_notify-tenant-changes

/*
  The trigger tenants_audit (0005) ran its function once for every row inserted: for an import
  of 100000 tenants, 100000 calls of PL/pgSQL each inserting one event, about two thirds of the
  time of the INSERT. From here on it serves UPDATE and DELETE only, row by row (an update's
  events compare each row's old and new values); inserts are recorded by tenants_audit_insert,
  a statement-level trigger that writes every 'created' event of the statement with one
  INSERT ... SELECT from the transition table. The events are the same: the tenant's id and
  slug, the whole new row, session_user, and the actor set in the same transaction (the rule of
  tg_tenants__audit, repeated here: a landed migration is never edited). For
  INSERT ... ON CONFLICT DO UPDATE the transition table holds the inserted rows only; the
  updated ones are recorded by tenants_audit, as before.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE FUNCTION tg_tenants__audit_insert() RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    marked text := current_setting('dbtools.actor', true);
    mine text := pg_current_xact_id()::text || ':';
    who text := CASE WHEN starts_with(marked, mine) THEN nullif(substr(marked, length(mine) + 1), '') END;
BEGIN
    INSERT INTO public.tenant_events (tenant_id, slug, kind, old_values, new_values, db_user, actor)
    SELECT inserted.id, inserted.slug, 'created', NULL, to_jsonb(inserted), session_user, who
    FROM new_rows AS inserted;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION tg_tenants__audit_insert() IS
    'AFTER INSERT ... FOR EACH STATEMENT trigger on tenants: records a created event in tenant_events for every row the statement inserted (SECURITY DEFINER, as tg_tenants__audit).';

-- A trigger function runs only as a trigger; nobody needs to call this one otherwise.
REVOKE EXECUTE ON FUNCTION tg_tenants__audit_insert() FROM PUBLIC;

DROP TRIGGER tenants_audit ON tenants;

CREATE TRIGGER tenants_audit
    AFTER UPDATE OR DELETE ON tenants
    FOR EACH ROW
    EXECUTE FUNCTION tg_tenants__audit();

COMMENT ON TRIGGER tenants_audit ON tenants IS
    'Records every change and delete of a tenant in tenant_events, row by row (see tg_tenants__audit); inserts are tenants_audit_insert''s.';

CREATE TRIGGER tenants_audit_insert
    AFTER INSERT ON tenants
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION tg_tenants__audit_insert();

COMMENT ON TRIGGER tenants_audit_insert ON tenants IS
    'Records the creation of every tenant a statement inserts in tenant_events, in one INSERT (see tg_tenants__audit_insert).';
