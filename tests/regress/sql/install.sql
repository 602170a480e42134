-- The extension installs its views and functions, readable by pg_monitor only.
CREATE EXTENSION hapg;
SELECT extversion FROM pg_extension WHERE extname = 'hapg';
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'hapg')
 ORDER BY 1;
-- not PUBLIC
SELECT has_function_privilege('public', 'hapg_status()', 'EXECUTE') AS public_status,
       has_table_privilege('public', 'hapg_members', 'SELECT') AS public_members,
       has_function_privilege('pg_monitor', 'hapg_status()', 'EXECUTE') AS monitor_status,
       has_table_privilege('pg_monitor', 'hapg_members', 'SELECT') AS monitor_members;
CREATE ROLE regress_hapg_plain LOGIN;
SET ROLE regress_hapg_plain;
SELECT * FROM hapg_members;
SELECT * FROM hapg_status();
RESET ROLE;
GRANT pg_monitor TO regress_hapg_plain;
SET ROLE regress_hapg_plain;
SELECT count(*) >= 0 AS monitor_can_read FROM hapg_members;
SELECT member FROM hapg_status();
RESET ROLE;
DROP ROLE regress_hapg_plain;
-- the library is already loaded; the relocatable flag and superuser rule hold
SELECT extrelocatable FROM pg_extension WHERE extname = 'hapg';
