-- With no Kubernetes API reachable the worker keeps looping, reports the
-- problem, and SQL answers from shared memory.
DO $$
BEGIN
  FOR i IN 1..150 LOOP
    EXIT WHEN (SELECT loop_count FROM hapg_status()) >= 2;
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT cluster, member, role, leader, api_ok, state, timeline,
       loop_count >= 2 AS looping,
       worker_pid IS NOT NULL AS has_worker,
       info_age < interval '5 seconds' AS fresh,
       last_loop > now() - interval '5 seconds' AS recent
  FROM hapg_status();
SELECT last_error ~ 'could not (read Lease|list member Pods): GET /.*(Connection refused|Couldn''t connect|Failed to connect)' AS error_explains
  FROM hapg_status();
-- no Pods could be listed: no members to show
SELECT count(*) AS members FROM hapg_members;
-- the worker is still the same process a second later
CREATE TEMP TABLE pid AS SELECT worker_pid FROM hapg_status();
SELECT pg_sleep(1.5);
SELECT s.worker_pid = p.worker_pid AS same_worker,
       s.loop_count >= 3 AS still_looping
  FROM hapg_status() s, pid p;
