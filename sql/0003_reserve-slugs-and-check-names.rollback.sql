-- Undo 0003_reserve-slugs-and-check-names: drop the name constraints, the reserved-slug trigger, its function and the reserved_slugs table.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

COMMENT ON COLUMN tenants.name IS 'Display name: not blank, at most 255 characters.';

-- The name rules go with this migration, which added them.
-- squawk-ignore ban-drop-constraint
ALTER TABLE tenants DROP CONSTRAINT tenants_name_visible_check;
-- squawk-ignore ban-drop-constraint
ALTER TABLE tenants DROP CONSTRAINT tenants_name_control_check;

DROP TRIGGER tenants_reserved_slug ON tenants;

-- Nothing but the trigger dropped above calls this function.
-- squawk-ignore ban-drop-function
DROP FUNCTION tg_tenants__reserved_slug();

-- The reservations go with the rule that used them; 0003 seeds them again when re-applied.
-- squawk-ignore ban-drop-table
DROP TABLE reserved_slugs;
