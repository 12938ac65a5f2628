-- Create the tenants registry: one row for every customer of the platform, found by its URL-safe slug.

/*
  yoyo runs this file in one transaction, so SET LOCAL lasts exactly as long as the migration.
  A migration that has to wait for a lock gives up after lock_timeout instead of queueing every
  query on the table behind it; statement_timeout bounds any single statement. The backslash
  escapes in the name rule below are regex escapes, which need standard_conforming_strings.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';
SET LOCAL standard_conforming_strings = on;

CREATE TYPE tenant_status AS ENUM ('active', 'suspended');

COMMENT ON TYPE tenant_status IS
    'Lifecycle of a tenant: active tenants are served; suspended tenants are kept but refused service.';

CREATE TABLE tenants (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    /*
      Slugs are ASCII, so collation "C" orders them by code point on every server, whatever its
      locale: listings and keyset pages come out the same everywhere, and comparing is cheaper.
    */
    slug text COLLATE "C" NOT NULL,
    name text NOT NULL,
    status tenant_status NOT NULL DEFAULT 'active',
    settings jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),

    -- A tenant is identified by a generated UUID that never changes.
    CONSTRAINT tenants_pkey PRIMARY KEY (id),
    -- No two tenants share a slug.
    CONSTRAINT tenants_slug_key UNIQUE (slug),
    -- A slug is 3 to 50 lowercase ASCII letters, digits and hyphens, starting and ending with a letter or digit.
    CONSTRAINT tenants_slug_format_check CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$'),
    /*
      A name is not blank: it holds at least one character outside Unicode's White_Space set
      (spelled out, so the rule does not depend on the database's locale).
    */
    CONSTRAINT tenants_name_not_blank_check CHECK (
        name ~ '[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
    ),
    -- A name is at most 255 characters long.
    CONSTRAINT tenants_name_length_check CHECK (char_length(name) <= 255),
    -- Settings are a JSON object: never an array, a string, a number, a boolean or null.
    CONSTRAINT tenants_settings_object_check CHECK (jsonb_typeof(settings) = 'object'),
    -- A row is never updated before it was created.
    CONSTRAINT tenants_updated_at_check CHECK (updated_at >= created_at)
);

COMMENT ON TABLE tenants IS
    'Every customer (tenant) of the platform; application code looks a tenant up by slug on every request.';
COMMENT ON COLUMN tenants.id IS 'Stable identifier, generated on insert and never changed.';
COMMENT ON COLUMN tenants.slug IS
    'URL-safe handle: 3-50 of a-z, 0-9 and -, no leading or trailing hyphen. Unique.';
COMMENT ON COLUMN tenants.name IS 'Display name: not blank, at most 255 characters.';
COMMENT ON COLUMN tenants.status IS 'Whether the tenant is served (active) or refused service (suspended).';
COMMENT ON COLUMN tenants.settings IS 'Per-tenant configuration, always a JSON object.';
COMMENT ON COLUMN tenants.created_at IS 'When the row was inserted; never changed by an update.';
COMMENT ON COLUMN tenants.updated_at IS
    'When the row last changed; kept by trigger tenants_timestamps, untouched by updates that change nothing.';

/*
  Why a trigger: every writer (the Python layer, a DBA in psql, a future service) gets the same rules.
  - id and created_at are immutable: changing them raises check_violation naming a constraint
    (tenants_id_immutable, tenants_created_at_immutable) that the Python layer maps like any other.
  - updated_at ignores whatever the UPDATE wrote. An update that changes nothing keeps it; any real
    change moves it to now(), and at least one microsecond past its old value, so it advances even
    for two changes in one transaction or when the clock steps back.
*/
CREATE FUNCTION tg_tenants__timestamps() RETURNS trigger
    LANGUAGE plpgsql
    VOLATILE
AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'the id of tenant "%" cannot be changed', OLD.slug
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenants_id_immutable',
                  TABLE = TG_TABLE_NAME, COLUMN = 'id';
    END IF;
    IF NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'the created_at of tenant "%" cannot be changed', OLD.slug
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tenants_created_at_immutable',
                  TABLE = TG_TABLE_NAME, COLUMN = 'created_at';
    END IF;

    NEW.updated_at := OLD.updated_at;
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := greatest(now(), OLD.updated_at + interval '1 microsecond');
    END IF;
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION tg_tenants__timestamps() IS
    'BEFORE UPDATE trigger on tenants: refuses changes of id and created_at, keeps updated_at true.';

CREATE TRIGGER tenants_timestamps
    BEFORE UPDATE ON tenants
    FOR EACH ROW
    EXECUTE FUNCTION tg_tenants__timestamps();
