-- Undo 0002_comment-tenants-constraints: remove the comments on the trigger and the constraints of tenants.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

COMMENT ON TRIGGER tenants_timestamps ON tenants IS NULL;
COMMENT ON CONSTRAINT tenants_updated_at_check ON tenants IS NULL;
COMMENT ON CONSTRAINT tenants_settings_object_check ON tenants IS NULL;
COMMENT ON CONSTRAINT tenants_name_length_check ON tenants IS NULL;
COMMENT ON CONSTRAINT tenants_name_not_blank_check ON tenants IS NULL;
COMMENT ON CONSTRAINT tenants_slug_format_check ON tenants IS NULL;
COMMENT ON CONSTRAINT tenants_slug_key ON tenants IS NULL;
COMMENT ON CONSTRAINT tenants_pkey ON tenants IS NULL;
