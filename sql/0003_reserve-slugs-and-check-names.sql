-- Keep the slugs the platform needs for itself out of tenants' hands, and refuse tenant names that hide control or only invisible characters.
-- depends: 0002_comment-tenants-constraints

/*
  The two name constraints are added NOT VALID here, which takes only a brief lock: new and
  updated rows are checked from now on. 0004_validate-tenant-name-checks checks the existing rows
  in a transaction of its own, under a lock that lets reads and writes go on (squawk's
  constraint-missing-not-valid rule). The backslash escapes in the name rules are regex escapes,
  which need standard_conforming_strings.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';
SET LOCAL standard_conforming_strings = on;

CREATE TABLE reserved_slugs (
    -- Collation "C", as tenants.slug: the trigger compares the two with the same collation.
    slug text COLLATE "C" NOT NULL,
    reason text NOT NULL,

    -- A slug is reserved once.
    CONSTRAINT reserved_slugs_pkey PRIMARY KEY (slug),
    -- A reserved slug is shaped like a slug: anything else could never be taken anyway.
    CONSTRAINT reserved_slugs_slug_format_check CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$'),
    -- A reservation says why, in a few words.
    CONSTRAINT reserved_slugs_reason_not_blank_check CHECK (reason ~ '[^[:space:]]')
);

COMMENT ON TABLE reserved_slugs IS
    'Slugs no tenant may take (host names and paths the platform uses itself). A DBA may INSERT more; tenants that already hold one keep it.';
COMMENT ON COLUMN reserved_slugs.slug IS 'The reserved slug, in the tenants.slug format.';
COMMENT ON COLUMN reserved_slugs.reason IS 'Why the platform keeps this slug for itself.';
COMMENT ON CONSTRAINT reserved_slugs_pkey ON reserved_slugs IS 'A slug is reserved once.';
COMMENT ON CONSTRAINT reserved_slugs_slug_format_check ON reserved_slugs IS
    'A reserved slug is shaped like a slug: anything else could never be taken anyway.';
COMMENT ON CONSTRAINT reserved_slugs_reason_not_blank_check ON reserved_slugs IS
    'A reservation says why, in a few words.';

/*
  The trigger below runs as the role that writes tenants, and reads this table as that role:
  every role that may insert a tenant must be able to read the list, which is no secret.
*/
GRANT SELECT ON reserved_slugs TO PUBLIC;

-- The seed list; dbtools.slugs.RESERVED_SLUGS holds the same slugs (a test compares them).
INSERT INTO reserved_slugs (slug, reason) VALUES
    ('admin', 'administration interface'),
    ('api', 'public API host'),
    ('app', 'web application host'),
    ('assets', 'static assets host'),
    ('auth', 'sign-in and identity host'),
    ('billing', 'billing interface'),
    ('blog', 'the platform''s blog'),
    ('cdn', 'content delivery host'),
    ('dashboard', 'operators'' dashboard'),
    ('docs', 'documentation site'),
    ('help', 'help centre'),
    ('login', 'sign-in page'),
    ('mail', 'mail host'),
    ('static', 'static files host'),
    ('status', 'status page'),
    ('support', 'support desk'),
    ('www', 'the platform''s own web site');

/*
  Why a trigger and not a foreign key or CHECK: a CHECK cannot read another table, and the rule is
  "not in reserved_slugs", which no constraint can say. Every writer gets it: the Python layer, a
  DBA in psql, another service. It fires on INSERT and on an UPDATE that changes the slug, so a
  tenant that held a slug before it was reserved keeps it and can still be updated. It raises
  check_violation naming tenants_slug_reserved, which the Python layer maps like a constraint.
*/
CREATE FUNCTION tg_tenants__reserved_slug() RETURNS trigger
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

COMMENT ON FUNCTION tg_tenants__reserved_slug() IS
    'BEFORE INSERT OR UPDATE OF slug trigger on tenants: refuses a slug listed in reserved_slugs (check_violation, tenants_slug_reserved).';

CREATE TRIGGER tenants_reserved_slug
    BEFORE INSERT OR UPDATE OF slug ON tenants
    FOR EACH ROW
    EXECUTE FUNCTION tg_tenants__reserved_slug();

COMMENT ON TRIGGER tenants_reserved_slug ON tenants IS
    'Refuses a slug listed in reserved_slugs on INSERT, and on an UPDATE that changes the slug (see tg_tenants__reserved_slug).';

/*
  Control characters (C0, DEL and C1) in a name drive terminals: ESC clears the screen or sets the
  window title, CR rewrites a line, so `tenants list` could print a row that is not there. NUL is
  not listed: PostgreSQL text cannot hold it.
*/
ALTER TABLE tenants
    -- A name holds no control characters (U+0001-U+001F, U+007F-U+009F).
    ADD CONSTRAINT tenants_name_control_check CHECK (name !~ '[\u0001-\u001f\u007f-\u009f]') NOT VALID;

COMMENT ON CONSTRAINT tenants_name_control_check ON tenants IS
    'A name holds no control characters (U+0001-U+001F, U+007F-U+009F).';

/*
  tenants_name_not_blank_check counts only White_Space as blank, so a name made of zero-width
  spaces (U+200B), byte order marks (U+FEFF), Hangul fillers (U+3164) or Braille blanks (U+2800)
  passed. This rule counts as blank, besides White_Space: every format character (general
  category Cf), every Default_Ignorable_Code_Point, and U+2800, as of Unicode 15.1, spelled out
  so that it does not depend on the server's ICU or locale. dbtools.tenants.NAME_BLANK_RANGES is
  the same list (a test compares the two for every code point).
*/
ALTER TABLE tenants
    -- A name holds at least one visible character: not only White_Space, format or invisible characters.
    ADD CONSTRAINT tenants_name_visible_check CHECK (
        name ~ '[^\t\n\u000b\f\r \u0085\u00a0\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u115f-\u1160\u1680\u17b4-\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]'
    ) NOT VALID;

COMMENT ON CONSTRAINT tenants_name_visible_check ON tenants IS
    'A name holds at least one visible character: not only White_Space, format or invisible characters.';

COMMENT ON COLUMN tenants.name IS
    'Display name: at least one visible character, no control characters, at most 255 characters.';
