-- Undo 0007_audit-inserts-per-statement: inserts are recorded row by row by tenants_audit again.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP TRIGGER tenants_audit_insert ON tenants;

DROP TRIGGER tenants_audit ON tenants;

CREATE TRIGGER tenants_audit
    AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW
    EXECUTE FUNCTION tg_tenants__audit();

COMMENT ON TRIGGER tenants_audit ON tenants IS
    'Records every insert, change and delete of a tenant in tenant_events (see tg_tenants__audit).';

-- Nothing but the trigger dropped above calls this function.
-- squawk-ignore ban-drop-function
DROP FUNCTION tg_tenants__audit_insert();
