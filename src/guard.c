/*
 * guard.c
 *		The start-up guard: a former primary never comes back writable
 *		unless it holds the Lease.
 *
 * Runs in the postmaster from _PG_init, before the startup process exists.
 * If this data directory belongs to an HA cluster (hapg.joined) and would
 * start as a primary (no standby.signal), it asks the API who holds the
 * Lease.  Only when no Lease exists (a cluster being bootstrapped) does it
 * start as a primary.  If it holds the Lease itself it starts as a standby
 * and the worker takes the Lease back by compare-and-swap, then promotes.
 * If another member holds it, it leaves a rejoin note for the launcher
 * (rewind from the leader) and refuses to start.  If the API cannot be
 * reached it starts as a standby.
 *
 * The HTTP request runs in a forked child so that libcurl never touches the
 * postmaster's own state; the child reports one line through a pipe.
 */
#include "hapg.h"
#include "kube.h"

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "access/xlog.h"
#include "miscadmin.h"

#define VERDICT_LEN 2048

/* In the child: decide, and put "verdict|holder|source|message" in out. */
static void
guard_check(KubeClient *kc, char *out, int outlen)
{
	KubeResponse r;
	json_object *obj;
	HapgLeaseInfo li;
	HapgPodInfo pod;
	char		err[HAPG_MSG_LEN];
	const char *me = hapg_effective_member();
	const char *ns = hapg_effective_namespace();
	char	   *source = NULL;

	if (!kube_request(kc, "GET", hapg_lease_path(ns, hapg_cluster_name), NULL, NULL, &r))
	{
		snprintf(out, outlen, "standby|||cannot read the Lease: %s", r.error);
		return;
	}
	if (r.status == 404)
	{
		snprintf(out, outlen, "primary|||no Lease exists yet");
		return;
	}
	if (r.status != 200)
	{
		snprintf(out, outlen, "standby|||cannot read the Lease: %s", r.error);
		return;
	}
	if (!hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)) ||
		!hapg_parse_lease(obj, &li, err, sizeof(err)))
	{
		snprintf(out, outlen, "standby|||cannot read the Lease: %s", err);
		return;
	}
	if (li.view.holder[0] == '\0')
	{
		snprintf(out, outlen, "standby|||the Lease is released");
		return;
	}
	if (strcmp(li.view.holder, me) == 0)
	{
		snprintf(out, outlen, "standby|%s||the Lease names this member; it takes it back through the Lease and promotes",
				 me);
		return;
	}
	kube_response_free(&r);
	if (kube_request(kc, "GET", hapg_pod_path(ns, li.view.holder), NULL, NULL, &r) && r.status == 200 &&
		hapg_parse_json(r.body, r.len, &obj, err, sizeof(err)) &&
		hapg_parse_pod(obj, hapg_role_label, &pod, err, sizeof(err)) &&
		pod.connect_address[0])
		source = hapg_leader_conninfo(pod.connect_address);
	snprintf(out, outlen, "rejoin|%s|%s|member \"%s\" holds the Lease", li.view.holder,
			 source ? source : "", li.view.holder);
}

/* Run guard_check in a child, with a deadline; returns its line. */
static void
run_child(char *verdict, int len)
{
	int			fds[2];
	pid_t		pid;
	int			got = 0;
	int			timeout_ms = hapg_retry_timeout * 1000 + 2000;
	int64		deadline = hapg_mono_ms() + timeout_ms;

	snprintf(verdict, len, "standby|||the Lease check did not finish");
	if (pipe(fds) != 0)
		return;
	pid = fork();
	if (pid < 0)
	{
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (pid == 0)
	{
		char		buf[VERDICT_LEN];
		KubeClient	kc;			/* this child's own client */
		ssize_t		unused;

		close(fds[0]);
		kube_global_init();
		kube_client_init(&kc);
		hapg_kube_configure(&kc, hapg_retry_timeout);
		guard_check(&kc, buf, sizeof(buf));
		kube_client_close(&kc);
		unused = write(fds[1], buf, strlen(buf));
		(void) unused;
		_exit(0);
	}
	close(fds[1]);
	while (got < len - 1)
	{
		struct pollfd p = {fds[0], POLLIN, 0};
		int64		left = deadline - hapg_mono_ms();
		ssize_t		n;

		if (left <= 0 || poll(&p, 1, (int) left) <= 0)
			break;
		n = read(fds[0], verdict + got, len - 1 - got);
		if (n <= 0)
			break;
		got += n;
	}
	close(fds[0]);
	if (got > 0)
		verdict[got] = '\0';
	else
		snprintf(verdict, len, "standby|||the Lease check did not finish in %d ms", timeout_ms);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/*
 * From _PG_init in the postmaster: a member's former primary starts as a
 * standby, or not at all, unless the Lease lets it start as a primary.
 */
void
hapg_startup_guard(void)
{
	struct stat st;
	char		verdict[VERDICT_LEN];
	char		why[HAPG_MSG_LEN];
	char	   *fields[4] = {verdict, "", "", ""};
	int			i;

	if (IsUnderPostmaster || !IsPostmasterEnvironment || IsBinaryUpgrade)
		return;
	if (stat(HAPG_JOINED_FILE, &st) != 0)
		return;					/* never part of a cluster: nothing to guard */
	if (stat(STANDBY_SIGNAL_FILE, &st) == 0 || stat(RECOVERY_SIGNAL_FILE, &st) == 0)
		return;
	if (!hapg_settings_ready(why, sizeof(why)))
		return;

	run_child(verdict, sizeof(verdict));
	for (i = 1; i < 4; i++)
	{
		char	   *bar = strchr(fields[i - 1], '|');

		if (bar == NULL)
			break;
		*bar = '\0';
		fields[i] = bar + 1;
	}
	if (strcmp(fields[0], "primary") == 0)
	{
		ereport(LOG, (errmsg("hapg: starting as a primary: %s", fields[3])));
		return;
	}

	if (!hapg_write_standby_signal())
		ereport(FATAL,
				(errmsg("hapg: could not create \"%s\": %m", STANDBY_SIGNAL_FILE),
				 errdetail("This server was a primary and may not start as one: %s.", fields[3])));
	if (strcmp(fields[0], "rejoin") == 0)
	{
		hapg_write_rejoin(fields[2], fields[3]);
		ereport(FATAL,
				(errmsg("hapg: this server was a primary but %s; it must rejoin as a standby",
						fields[3]),
				 errdetail("standby.signal and %s were written; the hapg launcher rewinds it from the leader and starts it as a standby.",
						   HAPG_REJOIN_FILE),
				 errhint("Start it with bin/hapg-launcher, or run pg_rewind against the leader yourself and start it again.")));
	}
	ereport(WARNING,
			(errmsg("hapg: starting as a standby instead of a primary: %s", fields[3]),
			 errdetail("A former primary never accepts writes unless it holds the Lease.")));
}
