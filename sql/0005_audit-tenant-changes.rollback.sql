-- Undo 0005_audit-tenant-changes: drop both triggers, their functions, the tenant_events table and its type.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP TRIGGER tenant_events_append_only ON tenant_events;

-- Nothing but the trigger dropped above calls this function.
-- squawk-ignore ban-drop-function
DROP FUNCTION tg_tenant_events__append_only();

DROP TRIGGER tenants_audit ON tenants;

-- Nothing but the trigger dropped above calls this function.
-- squawk-ignore ban-drop-function
DROP FUNCTION tg_tenants__audit();

-- Dropping the history is the point of this rollback; it destroys every recorded event.
-- squawk-ignore ban-drop-table
DROP TABLE tenant_events;

-- Only the tenant_events table used this type.
-- squawk-ignore ban-drop-type
DROP TYPE tenant_event_kind;
