-- Undo 0008_pin-reserved-slug-search-path: tg_tenants__reserved_slug reads reserved_slugs through the caller's search_path again, as 0003 wrote it.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE OR REPLACE FUNCTION tg_tenants__reserved_slug() RETURNS trigger
    LANGUAGE plpgsql
    STABLE
AS $$
BEGIN
    IF (TG_OP = 'INSERT' OR NEW.slug IS DISTINCT FROM OLD.slug)
       AND EXISTS (SELECT 1 FROM reserved_slugs r WHERE r.slug = NEW.slug) THEN
        RAISE EXCEPTION 'the slug "%" is reserved for the platform', NEW.slug
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenants_slug_reserved',
                  TABLE = TG_TABLE_NAME, COLUMN = 'slug';
    END IF;
    RETURN NEW;
END;
$$;

