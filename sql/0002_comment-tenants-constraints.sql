-- Describe every named constraint of tenants in the catalog, so \dd tenants* in psql shows each rule.
-- depends: 0001_create-tenants

/*
  Comments only: COMMENT ON CONSTRAINT takes a brief lock on the table and rewrites nothing. The
  texts repeat the one-line comments above each constraint in 0001_create-tenants.sql.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

COMMENT ON CONSTRAINT tenants_pkey ON tenants IS
    'A tenant is identified by a generated UUID that never changes.';
COMMENT ON CONSTRAINT tenants_slug_key ON tenants IS 'No two tenants share a slug.';
COMMENT ON CONSTRAINT tenants_slug_format_check ON tenants IS
    'A slug is 3 to 50 lowercase ASCII letters, digits and hyphens, starting and ending with a letter or digit.';
COMMENT ON CONSTRAINT tenants_name_not_blank_check ON tenants IS
    'A name is not blank: it holds at least one character outside Unicode''s White_Space set.';
COMMENT ON CONSTRAINT tenants_name_length_check ON tenants IS
    'A name is at most 255 characters long.';
COMMENT ON CONSTRAINT tenants_settings_object_check ON tenants IS
    'Settings are a JSON object: never an array, a string, a number, a boolean or null.';
COMMENT ON CONSTRAINT tenants_updated_at_check ON tenants IS
    'A row is never updated before it was created.';
COMMENT ON TRIGGER tenants_timestamps ON tenants IS
    'Refuses changes of id and created_at; keeps updated_at true (see tg_tenants__timestamps).';
