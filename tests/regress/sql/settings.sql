-- Settings: their values here, and the messages for invalid ones.
SELECT name, setting, unit, context, vartype
  FROM pg_settings WHERE name LIKE 'hapg.%' ORDER BY name;
-- Reload-only: cannot be set in a session.
SET hapg.ttl = 10;
-- Invalid values are refused with a clear message (ALTER SYSTEM validates
-- exactly as a reload of postgresql.conf does).
ALTER SYSTEM SET hapg.cluster_name = 'Not_A_Name';
ALTER SYSTEM SET hapg.member_name = '-pg';
ALTER SYSTEM SET hapg.namespace = 'a/b';
ALTER SYSTEM SET hapg.kubernetes_url = 'ftp://api.example';
ALTER SYSTEM SET hapg.kubernetes_url = 'https://api.example/ path';
ALTER SYSTEM SET hapg.connect_address = 'db.example';
ALTER SYSTEM SET hapg.connect_address = 'db.example:99999';
ALTER SYSTEM SET hapg.role_label = 'bad label!';
ALTER SYSTEM SET hapg.ttl = 2;
ALTER SYSTEM SET hapg.loop_wait = 0;
ALTER SYSTEM SET hapg.retry_timeout = '1h';
ALTER SYSTEM SET hapg.failover_priority = -1;
ALTER SYSTEM SET hapg.maximum_lag_on_failover = '-1';
ALTER SYSTEM SET hapg.nofailover = 'perhaps';
ALTER SYSTEM SET hapg.synchronous_mode = 'always';
ALTER SYSTEM SET hapg.synchronous_node_count = 0;
ALTER SYSTEM SET hapg.maximum_lag_on_syncnode = -2;
ALTER SYSTEM SET hapg.nosync = 'sometimes';
-- The prefix is reserved: a typo is an error, not a silent placeholder.
ALTER SYSTEM SET hapg.ttll = 30;
-- Nothing above reached postgresql.auto.conf.
SELECT count(*) AS auto_conf_entries FROM pg_file_settings
 WHERE name LIKE 'hapg.%' AND sourcefile LIKE '%postgresql.auto.conf';
