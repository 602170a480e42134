/*
 * handover.c
 *		A clean hand-over of the Lease when the leader stops on purpose (a
 *		switchover, or SIGTERM to the pod).
 *
 * The worker cannot do it itself: the postmaster stops every background
 * worker before it writes the shutdown checkpoint, and the Lease may only
 * go to a replica that has received everything, that checkpoint included.
 * So the worker forks a small process that outlives the server: it waits
 * for the postmaster to exit, reads pg_control, and if the shutdown was
 * clean releases the Lease with a hapg.io/handover annotation naming the
 * target and the end of the shutdown checkpoint record.  The target takes
 * the Lease once it has received WAL up to there (lease.c); everyone else
 * leaves it alone for one ttl.  If anything goes wrong here the Lease
 * simply runs out and the usual election follows.
 *
 * The child leaves the worker's session and process group (the postmaster
 * signals whole groups), detaches from shared memory (a new postmaster
 * refuses to start while any process is attached to the old segment),
 * never calls ereport (the logging code may look at shared memory) and
 * logs plain lines on stderr, which is the server log's destination.
 */
#include "hapg.h"
#include "kube.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "access/xlog_internal.h"
#include "access/xlogrecord.h"
#include "catalog/pg_control.h"
#include "miscadmin.h"
#include "libpq/pqsignal.h"
#include "port/pg_crc32c.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "storage/pg_shmem.h"
#include "storage/proc.h"
#include "utils/guc.h"

#define HANDOVER_CAS_TRIES 3

static void
child_log(const char *fmt,...)
pg_attribute_printf(1, 2);

/* One line on stderr with a timestamp, like the server's own lines. */
static void
child_log(const char *fmt,...)
{
	char		ts[64];
	char		msg[1024];
	struct timespec now;
	struct tm	tm;
	va_list		ap;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s.%03d GMT [%d] hapg hand-over: %s\n", ts,
			(int) (now.tv_nsec / 1000000), (int) getpid(), msg);
	fflush(stderr);
}

/* Wait (bounded) until the postmaster is gone: its watch pipe reports EOF. */
static bool
wait_postmaster_exit(int wait_ms)
{
	int64		deadline = hapg_mono_ms() + wait_ms;

	for (;;)
	{
		struct pollfd pfd;
		int64		left = deadline - hapg_mono_ms();
		char		c;

		if (left <= 0)
			return false;
		pfd.fd = postmaster_alive_fds[POSTMASTER_FD_WATCH];
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, (int) Min(left, 1000)) > 0 &&
			read(postmaster_alive_fds[POSTMASTER_FD_WATCH], &c, 1) == 0)
			return true;
		if (kill(PostmasterPid, 0) != 0 && errno == ESRCH)
			return true;
	}
}

/* pg_control as the stopped server left it; false if unreadable or damaged. */
static bool
read_control(ControlFileData *cf)
{
	char		path[MAXPGPATH];
	int			fd;
	pg_crc32c	crc;

	snprintf(path, sizeof(path), "%s/%s", DataDir, XLOG_CONTROL_FILE);
	fd = open(path, O_RDONLY | PG_BINARY, 0);
	if (fd < 0)
	{
		child_log("could not open \"%s\": %s", path, strerror(errno));
		return false;
	}
	if (read(fd, cf, sizeof(*cf)) != sizeof(*cf))
	{
		child_log("could not read \"%s\"", path);
		close(fd);
		return false;
	}
	close(fd);
	INIT_CRC32C(crc);
	COMP_CRC32C(crc, (char *) cf, offsetof(ControlFileData, crc));
	FIN_CRC32C(crc);
	if (!EQ_CRC32C(crc, cf->crc))
	{
		child_log("\"%s\" has a bad checksum", path);
		return false;
	}
	return true;
}

/*
 * GET the Lease, and release it to target if it is still the one this
 * server last renewed (renewTime last_renew_time): a compare-and-swap on
 * the version read, so a server restarted meanwhile keeps its Lease.
 */
static bool
release_lease(KubeClient *kc, const char *target, uint64 lsn, const char *reason,
			  const char *last_renew_time)
{
	const char *me = hapg_effective_member();
	char	   *path = hapg_lease_path(hapg_effective_namespace(), hapg_cluster_name);
	int			attempt;

	for (attempt = 0; attempt < HANDOVER_CAS_TRIES; attempt++)
	{
		KubeResponse r;
		json_object *obj;
		HapgLeaseInfo li;
		HapgLeaseEdit e;
		char		err[HAPG_MSG_LEN];
		char	   *handover;
		char	   *body;
		long		status;
		const char *why;

		if (!kube_request(kc, "GET", path, NULL, NULL, &r) || r.status != 200)
		{
			child_log("could not read the Lease: %s", r.error);
			kube_response_free(&r);
			return false;
		}
		if (!hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)) ||
			!hapg_parse_lease(obj, &li, err, sizeof(err)))
		{
			child_log("unusable Lease: %s", err);
			kube_response_free(&r);
			return false;
		}
		kube_response_free(&r);
		li.view.known = true;
		if (!hapg_handover_may_release(&li.view, me, last_renew_time, &why))
		{
			child_log("not releasing the Lease (held by \"%s\", renewTime %s; this server last renewed it at %s): %s",
					  li.view.holder[0] ? li.view.holder : "(nobody)",
					  li.view.renew_time[0] ? li.view.renew_time : "(none)",
					  last_renew_time[0] ? last_renew_time : "(unknown)", why);
			json_object_put(obj);
			return false;
		}
		handover = hapg_build_handover_json(me, target, lsn, reason);
		memset(&e, 0, sizeof(e));
		e.resource_version = li.view.resource_version;
		e.holder = "";
		e.handover_json = handover;
		e.switchover_json = "";
		body = hapg_build_lease_edit(obj, &e);
		json_object_put(obj);
		free(handover);
		if (body == NULL)
			return false;
		if (!kube_request(kc, "PUT", path, "application/json", body, &r))
		{
			child_log("could not release the Lease: %s", r.error);
			free(body);
			return false;
		}
		free(body);
		status = r.status;
		if (status == 200)
		{
			kube_response_free(&r);
			return true;
		}
		child_log("could not release the Lease: %s%s", r.error,
				  status == 409 ? "; reading it again" : "");
		kube_response_free(&r);
		if (status != 409)
			return false;
	}
	return false;
}

/* The child's whole life: wait, check, release, exit. */
static void
handover_child(KubeClient *kc, const char *target, const char *reason,
			   int wait_ms, const char *last_renew_time)
{
	ControlFileData cf;
	uint64		end;
	char		lsn[32];

	if (!wait_postmaster_exit(wait_ms))
	{
		/* only the worker was stopped: the server goes on, so does its Lease */
		return;
	}
	if (!read_control(&cf))
		return;
	if (cf.state != DB_SHUTDOWNED)
	{
		child_log("the server did not shut down cleanly (pg_control state %d): the Lease is left to run out",
				  (int) cf.state);
		return;
	}
	end = hapg_wal_record_end(cf.checkPoint,
							  SizeOfXLogRecord + SizeOfXLogRecordDataHeaderShort + sizeof(CheckPoint),
							  cf.xlog_blcksz, cf.xlog_seg_size,
							  SizeOfXLogShortPHD, SizeOfXLogLongPHD);
	hapg_format_lsn(end, lsn, sizeof(lsn));
	if (release_lease(kc, target, end, reason, last_renew_time))
		child_log("released the Lease to \"%s\", who takes it once it has WAL up to %s on timeline %u (%s)",
				  target, lsn, cf.checkPointCopy.ThisTimeLineID, reason);
}

/*
 * Fork the hand-over process.  Returns false (and logs) if it could not be
 * started; the caller then stops the server anyway and the Lease runs out.
 */
bool
hapg_start_handover(KubeClient *kc, const char *target, const char *reason,
					int wait_ms, const char *last_renew_time)
{
	char		t[HAPG_NAME_LEN];
	char		why[HAPG_MSG_LEN];
	char		renewed[40];
	pid_t		pid;

	strlcpy(t, target, sizeof(t));
	strlcpy(why, reason, sizeof(why));
	strlcpy(renewed, last_renew_time ? last_renew_time : "", sizeof(renewed));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
	{
		ereport(LOG, (errmsg("hapg: could not start the hand-over process: %m")));
		return false;
	}
	if (pid > 0)
		return true;

	/* child */
	setsid();
	pqsignal(SIGTERM, SIG_DFL);
	pqsignal(SIGQUIT, SIG_DFL);
	pqsignal(SIGINT, SIG_IGN);
	pqsignal(SIGHUP, SIG_IGN);
	pqsignal(SIGUSR1, SIG_IGN);
	pqsignal(SIGUSR2, SIG_IGN);
	sigprocmask(SIG_SETMASK, &UnBlockSig, NULL);
	/* a SIGTERM to the worker's group before setsid() was not meant for us */
	ShutdownRequestPending = false;
	ProcDiePending = false;
	InterruptPending = false;
	PGSharedMemoryDetach();
	MyProc = NULL;
	log_min_messages = PANIC;
	kube_forget_connections(kc);
	handover_child(kc, t, why, wait_ms, renewed);
	_exit(0);
}
