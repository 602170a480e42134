-- Steering functions: not for PUBLIC, granted to hapg_admin; refusals are
-- SQL errors with a hint.  No API is reachable here (tests/regress/regress.conf).
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'hapg_admin';
SELECT p.oid::regprocedure AS function,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public,
       has_function_privilege('hapg_admin', p.oid, 'EXECUTE') AS hapg_admin,
       has_function_privilege('pg_monitor', p.oid, 'EXECUTE') AS pg_monitor
  FROM pg_proc p
 WHERE p.proname IN ('hapg_switchover', 'hapg_failover', 'hapg_pause',
                     'hapg_resume', 'hapg_cancel_switchover')
 ORDER BY 1;
CREATE ROLE regress_hapg_plain LOGIN;
GRANT pg_monitor TO regress_hapg_plain;
SET ROLE regress_hapg_plain;
-- a plain user, even one that may read the status, cannot steer
SELECT hapg_switchover('pg-1');
SELECT hapg_failover('pg-1');
SELECT hapg_pause();
SELECT hapg_resume();
SELECT hapg_cancel_switchover();
RESET ROLE;
GRANT hapg_admin TO regress_hapg_plain;
SET ROLE regress_hapg_plain;
-- hapg_admin may: here every request meets the unreachable API (the
-- detail carries libcurl's words, so only its gist is shown)
CREATE FUNCTION pg_temp.refusal(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  msg text;
  det text;
  hnt text;
BEGIN
  EXECUTE 'SELECT ' || call;
  RETURN 'no error';
EXCEPTION WHEN others THEN
  GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                          hnt = PG_EXCEPTION_HINT;
  RETURN format('%s | %s | %s', msg,
                CASE WHEN det ~ '^could not list member Pods: GET /api/v1/namespaces/hapg-test/pods'
                     THEN 'detail names the failed call' ELSE det END, hnt);
END $$;
SELECT call, pg_temp.refusal(call) AS error
  FROM (VALUES ('hapg_pause()'), ('hapg_resume()'), ('hapg_cancel_switchover()'),
               ('hapg_switchover(''pg-1'')'), ('hapg_switchover()'),
               ('hapg_switchover(NULL, now() + interval ''1 hour'')'),
               ('hapg_failover(''pg-1'')')) AS c(call);
-- checked before anything is asked of the API
SELECT hapg_switchover('Not_A_Member!');
SELECT hapg_switchover(repeat('x', 64));
RESET ROLE;
DROP ROLE regress_hapg_plain;
-- a second installation keeps the existing role
DROP EXTENSION hapg;
SELECT count(*) AS hapg_admin_kept FROM pg_roles WHERE rolname = 'hapg_admin';
CREATE EXTENSION hapg;
SELECT has_function_privilege('hapg_admin', 'hapg_pause()', 'EXECUTE') AS granted_again;
