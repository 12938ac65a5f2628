-- Record every change of a tenant in tenant_events, whoever makes it, so that its history can be read back after the fact.
-- depends: 0004_validate-tenant-name-checks

/*
  A trigger on tenants writes the events, so a change from psql or from another service is
  recorded as surely as one made through dbtools. The table is new and empty, so its indexes are
  built in this transaction without blocking anyone.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TYPE tenant_event_kind AS ENUM (
    'created', 'renamed', 'slug_changed', 'settings_changed', 'suspended', 'activated', 'deleted'
);

COMMENT ON TYPE tenant_event_kind IS
    'What happened to a tenant: created, renamed (name), slug_changed, settings_changed, suspended, activated or deleted.';

/*
  No foreign key to tenants: the history of a tenant outlives the tenant. One UPDATE that changes
  several things (a name and the settings) is one event for each, in the order slug, name,
  settings, status; old_values and new_values hold only the columns the event is about, except
  that created holds the whole new row and deleted the whole old row.
*/
CREATE TABLE tenant_events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id uuid NOT NULL,
    slug text COLLATE "C" NOT NULL,
    kind tenant_event_kind NOT NULL,
    old_values jsonb,
    new_values jsonb,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    db_user text NOT NULL,
    actor text,

    -- Events are numbered in the order they were written.
    CONSTRAINT tenant_events_pkey PRIMARY KEY (id),
    -- A creation has no old values; a deletion has no new values; every other event has both.
    CONSTRAINT tenant_events_values_check CHECK (
        (old_values IS NULL) = (kind = 'created') AND (new_values IS NULL) = (kind = 'deleted')
    ),
    -- Old and new values are JSON objects keyed by column name.
    CONSTRAINT tenant_events_values_object_check CHECK (
        coalesce(jsonb_typeof(old_values), 'object') = 'object'
        AND coalesce(jsonb_typeof(new_values), 'object') = 'object'
    ),
    -- An actor, when given, is 1 to 255 characters long.
    CONSTRAINT tenant_events_actor_length_check CHECK (char_length(actor) BETWEEN 1 AND 255)
);

COMMENT ON TABLE tenant_events IS
    'Append-only history of every change of tenants, written by trigger tenants_audit; kept after the tenant is deleted.';
COMMENT ON COLUMN tenant_events.id IS 'Position of the event in the history: later events have larger ids.';
COMMENT ON COLUMN tenant_events.tenant_id IS 'tenants.id of the tenant changed (no foreign key: the tenant may be gone).';
COMMENT ON COLUMN tenant_events.slug IS 'The tenant''s slug after the change (before it, for a deletion).';
COMMENT ON COLUMN tenant_events.kind IS 'What changed.';
COMMENT ON COLUMN tenant_events.old_values IS
    'The changed columns before the change, by name; the whole row for deleted; NULL for created.';
COMMENT ON COLUMN tenant_events.new_values IS
    'The changed columns after the change, by name; the whole row for created; NULL for deleted.';
COMMENT ON COLUMN tenant_events.occurred_at IS 'When the transaction that made the change started (now()).';
COMMENT ON COLUMN tenant_events.db_user IS 'The database role that logged in (session_user) and made the change.';
COMMENT ON COLUMN tenant_events.actor IS
    'Who the application says made the change (setting dbtools.actor in the transaction); NULL when it said nothing.';
COMMENT ON CONSTRAINT tenant_events_pkey ON tenant_events IS 'Events are numbered in the order they were written.';
COMMENT ON CONSTRAINT tenant_events_values_check ON tenant_events IS
    'A creation has no old values; a deletion has no new values; every other event has both.';
COMMENT ON CONSTRAINT tenant_events_values_object_check ON tenant_events IS
    'Old and new values are JSON objects keyed by column name.';
COMMENT ON CONSTRAINT tenant_events_actor_length_check ON tenant_events IS
    'An actor, when given, is 1 to 255 characters long.';

-- The table was created above in this transaction: nobody can be waiting on it yet.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX tenant_events_slug_idx ON tenant_events (slug);
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX tenant_events_tenant_id_idx ON tenant_events (tenant_id, id);

COMMENT ON INDEX tenant_events_slug_idx IS 'Finds the tenants that ever had a slug (history by slug).';
COMMENT ON INDEX tenant_events_tenant_id_idx IS 'A tenant''s events in order.';

/*
  Why SECURITY DEFINER: the runtime role changes tenants, and so fires this trigger, but must not
  be able to write tenant_events itself (it could forge or erase history). The function runs as
  its owner, the migration owner, who may insert; the runtime role holds SELECT on tenant_events
  only. Hence the fixed search_path (pg_catalog, then pg_temp, so nothing a user creates can stand
  in for a built-in function) and the schema-qualified table and type. db_user is session_user,
  the role that logged in (current_user is the owner here).

  The actor comes from the setting dbtools.actor, which dbtools.tenants.acting_as sets with
  set_config(..., true) to '<transaction id>:<actor>'. The setting lasts until the end of the
  transaction; the id prefix makes sure it was set in this very transaction, so a session-level
  value that another client left on a pooled server session is never taken for an actor.
  Anything else (unset, reset, another transaction's) is recorded as NULL.
*/
CREATE FUNCTION tg_tenants__audit() RETURNS trigger
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
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.tenant_events (tenant_id, slug, kind, old_values, new_values, db_user, actor)
        VALUES (NEW.id, NEW.slug, 'created', NULL, to_jsonb(NEW), session_user, who);
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO public.tenant_events (tenant_id, slug, kind, old_values, new_values, db_user, actor)
        VALUES (OLD.id, OLD.slug, 'deleted', to_jsonb(OLD), NULL, session_user, who);
        RETURN NULL;
    END IF;
    IF NEW.slug IS DISTINCT FROM OLD.slug THEN
        INSERT INTO public.tenant_events (tenant_id, slug, kind, old_values, new_values, db_user, actor)
        VALUES (NEW.id, NEW.slug, 'slug_changed', jsonb_build_object('slug', OLD.slug),
                jsonb_build_object('slug', NEW.slug), session_user, who);
    END IF;
    IF NEW.name IS DISTINCT FROM OLD.name THEN
        INSERT INTO public.tenant_events (tenant_id, slug, kind, old_values, new_values, db_user, actor)
        VALUES (NEW.id, NEW.slug, 'renamed', jsonb_build_object('name', OLD.name),
                jsonb_build_object('name', NEW.name), session_user, who);
    END IF;
    IF NEW.settings IS DISTINCT FROM OLD.settings THEN
        INSERT INTO public.tenant_events (tenant_id, slug, kind, old_values, new_values, db_user, actor)
        VALUES (NEW.id, NEW.slug, 'settings_changed', jsonb_build_object('settings', OLD.settings),
                jsonb_build_object('settings', NEW.settings), session_user, who);
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO public.tenant_events (tenant_id, slug, kind, old_values, new_values, db_user, actor)
        VALUES (NEW.id, NEW.slug,
                CASE WHEN NEW.status = 'suspended' THEN 'suspended' ELSE 'activated' END::public.tenant_event_kind,
                jsonb_build_object('status', OLD.status), jsonb_build_object('status', NEW.status),
                session_user, who);
    END IF;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION tg_tenants__audit() IS
    'AFTER INSERT OR UPDATE OR DELETE trigger on tenants: records each change in tenant_events (SECURITY DEFINER, so writers of tenants need no privilege on tenant_events).';

-- A trigger function runs only as a trigger; nobody needs to call this one otherwise.
REVOKE EXECUTE ON FUNCTION tg_tenants__audit() FROM PUBLIC;

CREATE TRIGGER tenants_audit
    AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW
    EXECUTE FUNCTION tg_tenants__audit();

COMMENT ON TRIGGER tenants_audit ON tenants IS
    'Records every insert, change and delete of a tenant in tenant_events (see tg_tenants__audit).';

/*
  Privileges already keep the runtime role from changing events (it holds SELECT only); this
  trigger keeps everyone else off them too, the owner and superusers included, so that history is
  only ever appended to. A DBA who must purge events disables the trigger first, on purpose:
  ALTER TABLE tenant_events DISABLE TRIGGER tenant_events_append_only.
*/
CREATE FUNCTION tg_tenant_events__append_only() RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
AS $$
BEGIN
    RAISE EXCEPTION 'tenant_events is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege', TABLE = TG_TABLE_NAME,
              HINT = 'History is never rewritten; to purge events on purpose, disable trigger tenant_events_append_only first.';
END;
$$;

COMMENT ON FUNCTION tg_tenant_events__append_only() IS
    'BEFORE UPDATE OR DELETE OR TRUNCATE trigger on tenant_events: refuses them all (insufficient_privilege).';

CREATE TRIGGER tenant_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON tenant_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION tg_tenant_events__append_only();

COMMENT ON TRIGGER tenant_events_append_only ON tenant_events IS
    'Refuses UPDATE, DELETE and TRUNCATE of events, for every role (see tg_tenant_events__append_only).';
