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
    OUT info_age interval,
    OUT paused boolean,
    OUT pending_switchover text,
    OUT failsafe_active boolean,
    OUT failsafe_since timestamptz,
    OUT sync_mode text,
    OUT sync_strict boolean,
    OUT sync_required integer,
    OUT sync_standbys text[])
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
    OUT pod_role_label text,
    OUT nofailover boolean,
    OUT failover_priority integer,
    OUT paused boolean,
    OUT sync_state text,
    OUT nosync boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'hapg_members_internal'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

CREATE VIEW hapg_members AS
  SELECT member, role, state, connect_address, timeline, lsn, lag_bytes,
         is_leader, last_seen, pod_role_label, nofailover, failover_priority,
         paused, sync_state, nosync
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

-- Steering the cluster.  Every function is carried out by this member's
-- worker as a compare-and-swap on the leader Lease in the Kubernetes API.

CREATE FUNCTION hapg_switchover(candidate text DEFAULT NULL,
                                scheduled_at timestamptz DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'hapg_switchover'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION hapg_switchover(text, timestamptz) IS
  'planned switchover to candidate (default: the healthiest replica), now or at scheduled_at; returns the new leader';

CREATE FUNCTION hapg_failover(candidate text, force boolean DEFAULT false)
RETURNS text
AS 'MODULE_PATHNAME', 'hapg_failover'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION hapg_failover(text, boolean) IS
  'promote candidate when the cluster has no healthy leader (force: even outside the synchronous standbys); returns the new leader';

CREATE FUNCTION hapg_pause()
RETURNS text
AS 'MODULE_PATHNAME', 'hapg_pause'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION hapg_pause() IS
  'maintenance mode: no automatic failover or fencing until hapg_resume()';

CREATE FUNCTION hapg_resume()
RETURNS text
AS 'MODULE_PATHNAME', 'hapg_resume'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION hapg_resume() IS
  'end maintenance mode';

CREATE FUNCTION hapg_cancel_switchover()
RETURNS text
AS 'MODULE_PATHNAME', 'hapg_cancel_switchover'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION hapg_cancel_switchover() IS
  'drop a pending (scheduled) switchover';

-- Roles are cluster-wide: the role may exist from an earlier installation.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'hapg_admin') THEN
    CREATE ROLE hapg_admin NOLOGIN;
  END IF;
END
$$;

REVOKE ALL ON FUNCTION hapg_switchover(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION hapg_failover(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION hapg_pause() FROM PUBLIC;
REVOKE ALL ON FUNCTION hapg_resume() FROM PUBLIC;
REVOKE ALL ON FUNCTION hapg_cancel_switchover() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hapg_switchover(text, timestamptz) TO hapg_admin;
GRANT EXECUTE ON FUNCTION hapg_failover(text, boolean) TO hapg_admin;
GRANT EXECUTE ON FUNCTION hapg_pause() TO hapg_admin;
GRANT EXECUTE ON FUNCTION hapg_resume() TO hapg_admin;
GRANT EXECUTE ON FUNCTION hapg_cancel_switchover() TO hapg_admin;
