-- Check the slugs of inserted tenants against reserved_slugs once per statement instead of once per row, and announce inserts and deletes without sorting their slugs, so that a bulk insert of tenants is not slowed down by these rules.
-- depends: 0008_pin-reserved-slug-search-path

/*
  tenants_reserved_slug (0003) ran a PL/pgSQL function and a query for every row inserted: for
  an import of 100000 tenants, about a fifth of the INSERT's time. From here on it serves
  UPDATE OF slug only, row by row, as before; inserts are checked by tenants_admit_insert, a
  statement-level trigger that joins the rows the statement inserted (its transition table)
  with reserved_slugs once. It raises the same error as before (check_violation, constraint
  tenants_slug_reserved, the same message) for the first reserved slug in slug order; the error
  comes at the end of the statement rather than at the row, and the statement is undone all the
  same, every row it inserted with it. PostgreSQL fires the AFTER triggers of one event in the
  order of their names: tenants_admit_insert sorts before tenants_audit_insert, so a refused
  statement does not write its audit trail first.

  Two cases change, because the check now comes after the row is in:
  - INSERT ... ON CONFLICT (slug) of a slug that a tenant held before the slug was reserved no
    longer raises. Nothing is inserted, so nothing is taken; the tenant keeps its slug, as it
    does for an UPDATE (see 0003).
  - A plain INSERT of such a slug is refused as taken (unique_violation, tenants_slug_key)
    rather than as reserved: the unique index sees it first. Refused all the same.

  tg_tenants__notify (0006): the slugs an INSERT or a DELETE touched are unique already
  (tenants_slug_key), so they are no longer sorted to drop duplicates, and the payloads are cut
  from the list in one query instead of one array slice each. The protocol is unchanged: a
  payload lists at most 100 slugs, in no particular order.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE FUNCTION tg_tenants__reserved_slug_insert() RETURNS trigger
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    reserved text;
BEGIN
    SELECT min(inserted.slug) INTO reserved
    FROM new_rows AS inserted
    JOIN public.reserved_slugs AS r ON r.slug = inserted.slug;
    IF reserved IS NOT NULL THEN
        RAISE EXCEPTION 'the slug "%" is reserved for the platform', reserved
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenants_slug_reserved',
                  TABLE = TG_TABLE_NAME, COLUMN = 'slug';
    END IF;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION tg_tenants__reserved_slug_insert() IS
    'AFTER INSERT ... FOR EACH STATEMENT trigger on tenants: refuses the statement if it inserted a slug listed in reserved_slugs (check_violation, tenants_slug_reserved).';

-- A trigger function runs only as a trigger; nobody needs to call this one otherwise.
REVOKE EXECUTE ON FUNCTION tg_tenants__reserved_slug_insert() FROM PUBLIC;

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
        changed := ARRAY(SELECT slug FROM new_rows);
    ELSIF TG_OP = 'DELETE' THEN
        changed := ARRAY(SELECT slug FROM old_rows);
    ELSE
        -- A row the UPDATE left as it was is in both transition tables and cancels out; a
        -- changed row leaves its old slug in the first difference and its new one in the second.
        changed := ARRAY(
            SELECT slug FROM (SELECT * FROM old_rows EXCEPT SELECT * FROM new_rows) AS before
            UNION
            SELECT slug FROM (SELECT * FROM new_rows EXCEPT SELECT * FROM old_rows) AS after
        );
    END IF;
    PERFORM pg_notify('dbtools_tenants', string_agg(slug, ' ' ORDER BY position))
    FROM unnest(changed) WITH ORDINALITY AS listed (slug, position)
    GROUP BY (position - 1) / 100;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION tg_tenants__reserved_slug() IS
    'BEFORE UPDATE OF slug trigger on tenants: refuses a new slug listed in reserved_slugs (check_violation, tenants_slug_reserved).';

-- Left stale by 0007, which took inserts from the trigger that calls it.
COMMENT ON FUNCTION tg_tenants__audit() IS
    'AFTER UPDATE OR DELETE trigger on tenants: records each change in tenant_events (SECURITY DEFINER, so writers of tenants need no privilege on tenant_events); inserts are tg_tenants__audit_insert''s.';

DROP TRIGGER tenants_reserved_slug ON tenants;

CREATE TRIGGER tenants_reserved_slug
    BEFORE UPDATE OF slug ON tenants
    FOR EACH ROW
    EXECUTE FUNCTION tg_tenants__reserved_slug();

COMMENT ON TRIGGER tenants_reserved_slug ON tenants IS
    'Refuses an UPDATE that changes a slug to one listed in reserved_slugs (see tg_tenants__reserved_slug); inserts are tenants_admit_insert''s.';

-- Named to fire first among the AFTER INSERT triggers (name order): see the top of this file.
CREATE TRIGGER tenants_admit_insert
    AFTER INSERT ON tenants
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION tg_tenants__reserved_slug_insert();

COMMENT ON TRIGGER tenants_admit_insert ON tenants IS
    'Refuses an INSERT of a slug listed in reserved_slugs, checking all the rows of the statement at once (see tg_tenants__reserved_slug_insert); fires before the audit and the notifications.';
