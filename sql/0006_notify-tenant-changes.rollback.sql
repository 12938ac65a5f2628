-- Undo 0006_notify-tenant-changes: drop the four notify triggers, then their function.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP TRIGGER tenants_notify_truncate ON tenants;
DROP TRIGGER tenants_notify_delete ON tenants;
DROP TRIGGER tenants_notify_update ON tenants;
DROP TRIGGER tenants_notify_insert ON tenants;

-- Nothing but the triggers dropped above calls this function.
-- squawk-ignore ban-drop-function
DROP FUNCTION tg_tenants__notify();
