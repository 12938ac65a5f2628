-- Undo 0004_validate-tenant-name-checks: put the two name rules back to NOT VALID, as 0003 left them.

/*
  PostgreSQL cannot mark a validated constraint NOT VALID again, so each is dropped and added
  back NOT VALID with its comment (the same text as in 0003): the schema is then exactly what
  0003 built, and 0003's rollback can drop them.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';
SET LOCAL standard_conforming_strings = on;

-- Added back NOT VALID just below.
-- squawk-ignore ban-drop-constraint
ALTER TABLE tenants DROP CONSTRAINT tenants_name_visible_check;
ALTER TABLE tenants
    -- A name holds at least one visible character: not only White_Space, format or invisible characters.
    ADD CONSTRAINT tenants_name_visible_check CHECK (
        name ~ '[^\t\n\u000b\f\r \u0085\u00a0\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u115f-\u1160\u1680\u17b4-\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]'
    ) NOT VALID;
COMMENT ON CONSTRAINT tenants_name_visible_check ON tenants IS
    'A name holds at least one visible character: not only White_Space, format or invisible characters.';

-- Added back NOT VALID just below.
-- squawk-ignore ban-drop-constraint
ALTER TABLE tenants DROP CONSTRAINT tenants_name_control_check;
ALTER TABLE tenants
    -- A name holds no control characters (U+0001-U+001F, U+007F-U+009F).
    ADD CONSTRAINT tenants_name_control_check CHECK (name !~ '[\u0001-\u001f\u007f-\u009f]') NOT VALID;
COMMENT ON CONSTRAINT tenants_name_control_check ON tenants IS
    'A name holds no control characters (U+0001-U+001F, U+007F-U+009F).';
