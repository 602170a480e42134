/* hapg--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION hapg" to load this file. \quit

CREATE FUNCTION hapg_status(
    OUT cluster text,
    OUT member text,
    OUT role text,
    OUT leader text,
    OUT lease_transitions integer,
    OUT lease_expires_in interval,
    OUT api_ok boolean,
    OUT last_error text,
    OUT last_loop timestamptz,
    OUT state text,
    OUT timeline integer,
    OUT lsn pg_lsn,
    OUT loop_count bigint,
    OUT worker_pid integer,
    OUT info_age interval)
RETURNS record
AS 'MODULE_PATHNAME', 'hapg_status'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION hapg_status() IS
  'this member''s view of the cluster, from the hapg worker''s shared state';

CREATE FUNCTION hapg_members_internal(
    OUT member text,
    OUT role text,
    OUT state text,
    OUT connect_address text,
    OUT timeline integer,
    OUT lsn pg_lsn,
    OUT lag_bytes bigint,
    OUT is_leader boolean,
    OUT last_seen timestamptz,
    OUT pod_role_label text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'hapg_members_internal'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

CREATE VIEW hapg_members AS
  SELECT member, role, state, connect_address, timeline, lsn, lag_bytes,
         is_leader, last_seen, pod_role_label
    FROM hapg_members_internal();

COMMENT ON VIEW hapg_members IS
  'members of the hapg cluster (Pods labelled hapg.io/cluster) as this member last saw them';

CREATE FUNCTION hapg_history_internal(
    OUT old_timeline integer,
    OUT new_timeline integer,
    OUT lsn pg_lsn,
    OUT reason text,
    OUT switched_at text,
    OUT leader text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'hapg_history_internal'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

CREATE VIEW hapg_history AS
  SELECT old_timeline, new_timeline, lsn, reason,
         CASE WHEN switched_at ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$'
              THEN switched_at::timestamptz END AS switched_at,
         leader
    FROM hapg_history_internal();

COMMENT ON VIEW hapg_history IS
  'leader changes of the hapg cluster (failovers), as kept in the Lease, oldest first';

REVOKE ALL ON FUNCTION hapg_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION hapg_members_internal() FROM PUBLIC;
REVOKE ALL ON hapg_members FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hapg_status() TO pg_monitor;
GRANT EXECUTE ON FUNCTION hapg_members_internal() TO pg_monitor;
GRANT SELECT ON hapg_members TO pg_monitor;
REVOKE ALL ON FUNCTION hapg_history_internal() FROM PUBLIC;
REVOKE ALL ON hapg_history FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hapg_history_internal() TO pg_monitor;
GRANT SELECT ON hapg_history TO pg_monitor;
