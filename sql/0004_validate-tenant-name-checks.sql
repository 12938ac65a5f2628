-- Check the existing tenant names against the two name rules that 0003 added NOT VALID.
-- depends: 0003_reserve-slugs-and-check-names

/*
  VALIDATE CONSTRAINT scans the table under SHARE UPDATE EXCLUSIVE, which lets reads and writes
  go on; it runs here, in a transaction of its own, so that the ACCESS EXCLUSIVE lock that 0003
  took to add the constraints is long released. If a name breaks a rule this migration fails,
  naming the constraint: fix those rows (SELECT slug, name FROM tenants WHERE name ~ ...) and
  migrate again. The statement timeout is longer: the scan reads the whole table.
*/
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '10min';

ALTER TABLE tenants VALIDATE CONSTRAINT tenants_name_control_check;
ALTER TABLE tenants VALIDATE CONSTRAINT tenants_name_visible_check;
