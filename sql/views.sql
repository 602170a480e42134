-- The columns of the SQL surface are an interface: pin them.
SELECT attnum, attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid = 'hapg_members'::regclass AND attnum > 0
 ORDER BY attnum;
SELECT * FROM hapg_status() LIMIT 0;
SELECT obj_description('hapg_members'::regclass, 'pg_class');
