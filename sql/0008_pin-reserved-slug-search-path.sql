-- Make the reserved-slug trigger function read public.reserved_slugs with its search_path pinned, so that no session can hide the list behind a temporary table.
-- depends: 0007_audit-inserts-per-statement

/*
  tg_tenants__reserved_slug (0003) read reserved_slugs through the caller's search_path, where
  a temporary table of that name comes first: any role that may write tenants (the runtime role
  included) could create an empty one and insert a tenant with a reserved slug, or rename one to
  it. It now reads public.reserved_slugs, with the search_path pinned to pg_catalog and pg_temp
  (searched last when named), as the other trigger functions do. Nothing else changes: the
  body, the trigger and the error are 0003's.

  A migration of its own, before the one that reworks the check (0009): rolling that one back,
  for whatever reason, keeps this fix.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE OR REPLACE FUNCTION tg_tenants__reserved_slug() RETURNS trigger
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (TG_OP = 'INSERT' OR NEW.slug IS DISTINCT FROM OLD.slug)
       AND EXISTS (SELECT 1 FROM public.reserved_slugs r WHERE r.slug = NEW.slug) THEN
        RAISE EXCEPTION 'the slug "%" is reserved for the platform', NEW.slug
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenants_slug_reserved',
                  TABLE = TG_TABLE_NAME, COLUMN = 'slug';
    END IF;
    RETURN NEW;
END;
$$;

