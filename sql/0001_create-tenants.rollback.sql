-- Undo 0001_create-tenants: drop the trigger, its function, the tenants table and the tenant_status type.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP TRIGGER tenants_timestamps ON tenants;

-- Nothing but the trigger dropped above calls this function.
-- squawk-ignore ban-drop-function
DROP FUNCTION tg_tenants__timestamps();

-- Dropping the table is the point of this rollback; it destroys every tenant row.
-- squawk-ignore ban-drop-table
DROP TABLE tenants;

-- Only the tenants table used this type.
-- squawk-ignore ban-drop-type
DROP TYPE tenant_status;
