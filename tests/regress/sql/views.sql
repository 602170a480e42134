-- The columns of the SQL surface are an interface: pin them.
SELECT attnum, attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid = 'hapg_members'::regclass AND attnum > 0
 ORDER BY attnum;
SELECT * FROM hapg_status() LIMIT 0;
SELECT obj_description('hapg_members'::regclass, 'pg_class');
SELECT attnum, attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid = 'hapg_history'::regclass AND attnum > 0
 ORDER BY attnum;
-- no failover seen by a member that never reached the API
SELECT count(*) AS history_rows FROM hapg_history;
