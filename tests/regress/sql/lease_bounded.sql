-- Lease-bounded commits on a server that is configured but has never
-- joined a cluster (no API here): stock PostgreSQL, every commit goes through.
CREATE TABLE guard_t (id int);
INSERT INTO guard_t VALUES (1);
BEGIN;
INSERT INTO guard_t VALUES (2);
SAVEPOINT s;
INSERT INTO guard_t VALUES (3);
RELEASE SAVEPOINT s;
COMMIT;
SET hapg.lease_bounded_reads = on;
SELECT count(*) FROM guard_t;
RESET hapg.lease_bounded_reads;
-- Reload-only: a session cannot switch the commit check off.
SET hapg.lease_bounded_commits = off;
SHOW hapg.lease_bounded_commits;
DROP TABLE guard_t;
