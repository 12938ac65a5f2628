-- The runtime role: what an application may do in the system database, and nothing more.

/*
  `dbtools roles setup` runs this file in one transaction, as the migration owner, with {role}
  and {database} replaced by the quoted names of the runtime role and the database; it creates
  the role first when it is missing. Every statement can run again: the role ends up with exactly
  these privileges on the migrations' objects, whatever it held before.

  By hand, with the names filled in:
    sed -e 's/{role}/dbtools_app/g' -e 's/{database}/dbtools_system/g' runtime.sql | psql "$MIGRATIONS_URL"

  Owning nothing, the role cannot ALTER or DROP any object. It gets no TRUNCATE, REFERENCES or
  TRIGGER privilege anywhere, and nothing on yoyo's bookkeeping or the checksums. It reads
  tenant_events but cannot write them: the triggers tenants_audit and tenants_audit_insert
  record its changes as the migration owner (SECURITY DEFINER). reserved_slugs is readable by
  everyone (0003), writable by the owner only.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

REVOKE ALL ON
    tenants, tenant_events, reserved_slugs,
    _yoyo_migration, _yoyo_log, _yoyo_version, yoyo_lock, _dbtools_migration_checksum
FROM {role};

-- Whatever someone granted the tables to PUBLIC, the role holds too: PUBLIC gets back only
-- what the migrations gave it (reading reserved_slugs, for the trigger that checks slugs).
REVOKE ALL ON
    tenants, tenant_events, reserved_slugs,
    _yoyo_migration, _yoyo_log, _yoyo_version, yoyo_lock, _dbtools_migration_checksum
FROM PUBLIC;
GRANT SELECT ON reserved_slugs TO PUBLIC;

-- No creating objects: no tables in the schema (PUBLIC included, as PostgreSQL 15+ has it by
-- default), no schemas in the database; no calling the trigger functions.
REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role};
REVOKE CREATE ON DATABASE {database} FROM {role};
-- Every function of the schema, not a list: the trigger functions the migrations applied so far
-- made, whichever those are (a rolled-back migration takes its own away).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {role};
-- Attributes that would reach past these grants.
ALTER ROLE {role} NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;

-- Grant options, schema and database privileges granted by hand, types: reset, then granted
-- below exactly as listed (a grant option would let the role pass them on).
REVOKE ALL ON SCHEMA public FROM {role};
REVOKE ALL ON DATABASE {database} FROM {role};
REVOKE ALL ON TYPE tenant_status, tenant_event_kind FROM {role};
-- Settings someone gave the role (ALTER ROLE ... SET search_path = ...) would follow it in.
ALTER ROLE {role} RESET ALL;

GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {role};
GRANT USAGE ON SCHEMA public TO {role};

-- The application's work: read and change tenants.
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants TO {role};
-- Its changes are announced on channel dbtools_tenants, which the tenant cache (dbtools.cache)
-- listens on: LISTEN needs no privilege.
-- The history, read-only (tenants.history, `dbtools tenants history`).
GRANT SELECT ON tenant_events TO {role};
-- The reserved slugs, read-only (also granted to PUBLIC by 0003).
GRANT SELECT ON reserved_slugs TO {role};
