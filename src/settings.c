/*
 * settings.c
 *		hapg's settings: the GUCs and their checks, the values in effect
 *		when a setting is left empty, and the worker's settings in force
 *		(the last combination that passed the timing rule).
 */
#include "hapg.h"
#include "failsafe.h"
#include "syncrep.h"
#include "kube.h"

#include <limits.h>
#include <unistd.h>

#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "replication/walreceiver.h"
#include "utils/guc.h"

char	   *hapg_cluster_name = NULL;
char	   *hapg_member_name = NULL;
char	   *hapg_namespace = NULL;
char	   *hapg_kubernetes_url = NULL;
char	   *hapg_token_file = NULL;
char	   *hapg_ca_file = NULL;
int			hapg_ttl = 30;
int			hapg_loop_wait = 10;
int			hapg_retry_timeout = 10;
char	   *hapg_connect_address = NULL;
char	   *hapg_role_label = NULL;
bool		hapg_nofailover = false;
int			hapg_failover_priority = 1;
int			hapg_maximum_lag_on_failover = 1024 * 1024;
char	   *hapg_replication_conninfo = NULL;
bool		hapg_use_slots = true;
int			hapg_switchover_timeout = 60;
bool		hapg_lease_bounded_commits = true;
bool		hapg_lease_bounded_reads = false;
bool		hapg_failsafe_mode = false;
int			hapg_synchronous_mode = HAPG_SYNC_OFF;
bool		hapg_synchronous_mode_strict = false;
int			hapg_synchronous_node_count = 1;
bool		hapg_nosync = false;
int			hapg_maximum_lag_on_syncnode = -1;

static const struct config_enum_entry sync_mode_options[] = {
	{"off", HAPG_SYNC_OFF, false},
	{"on", HAPG_SYNC_ON, false},
	{"quorum", HAPG_SYNC_QUORUM, false},
	{"false", HAPG_SYNC_OFF, true},
	{"true", HAPG_SYNC_ON, true},
	{NULL, 0, false}
};

/* Names hapg sends to Kubernetes must be names Kubernetes accepts. */
static bool
check_k8s_name(char **newval, void **extra pg_attribute_unused(),
				GucSource source pg_attribute_unused())
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (!hapg_valid_member_name(*newval))
	{
		GUC_check_errdetail("\"%s\" is not a valid Kubernetes object name.", *newval);
		GUC_check_errhint("Use at most 63 lower-case letters, digits, '-' or '.', starting and ending with a letter or digit.");
		return false;
	}
	return true;
}

/* Catch a typo in the API address at reload time, not at the first request. */
static bool
check_url(char **newval, void **extra pg_attribute_unused(),
				GucSource source pg_attribute_unused())
{
	const char *v = *newval;

	if (v == NULL || v[0] == '\0')
		return true;
	if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0)
	{
		GUC_check_errdetail("hapg.kubernetes_url must start with https:// or http://.");
		GUC_check_errhint("Leave it empty to use the in-cluster address from KUBERNETES_SERVICE_HOST.");
		return false;
	}
	if (strpbrk(v, " \t\r\n") != NULL || strlen(v) > 900)
	{
		GUC_check_errdetail("hapg.kubernetes_url must be a URL without spaces, at most 900 characters.");
		return false;
	}
	return true;
}

/* Other members must be able to connect to host:port. */
static bool
check_connect_address(char **newval, void **extra pg_attribute_unused(),
				GucSource source pg_attribute_unused())
{
	const char *v = *newval;
	const char *colon;
	char	   *end;
	long		port;

	if (v == NULL || v[0] == '\0')
		return true;
	colon = strrchr(v, ':');
	if (colon == NULL || colon == v || strlen(v) >= HAPG_ADDR_LEN ||
		strpbrk(v, " \t\r\n/") != NULL)
	{
		GUC_check_errdetail("hapg.connect_address must have the form host:port.");
		GUC_check_errhint("For example '10.0.0.12:5432'; leave it empty to use POD_IP and port.");
		return false;
	}
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 1 || port > 65535)
	{
		GUC_check_errdetail("The port in hapg.connect_address must be a number from 1 to 65535.");
		return false;
	}
	return true;
}

/* A label key: optional DNS prefix and "/", then a name of at most 63 chars. */
static bool
check_label_key(char **newval, void **extra pg_attribute_unused(),
				GucSource source pg_attribute_unused())
{
	const char *v = *newval;
	const char *name = v ? strrchr(v, '/') : NULL;
	size_t		i,
				len;

	name = name ? name + 1 : v;
	len = name ? strlen(name) : 0;
	if (len == 0 || len > 63 || strlen(v) > 253 ||
		!isalnum((unsigned char) name[0]) || !isalnum((unsigned char) name[len - 1]))
		goto bad;
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char) name[i]) && name[i] != '-' &&
			name[i] != '_' && name[i] != '.')
			goto bad;
	return true;
bad:
	GUC_check_errdetail("\"%s\" is not a valid Kubernetes label key.", v ? v : "");
	GUC_check_errhint("Use a name such as 'role' or 'example.com/role'.");
	return false;
}

/* Member name: setting, else the Pod name Kubernetes gives us, else host name. */
const char *
hapg_effective_member(void)
{
	static char host[256];
	const char *pod = getenv("POD_NAME");

	if (hapg_member_name && hapg_member_name[0])
		return hapg_member_name;
	if (pod && pod[0])
		return pod;
	if (host[0] == '\0' && gethostname(host, sizeof(host) - 1) != 0)
		strlcpy(host, "localhost", sizeof(host));
	return host;
}

/* Namespace: setting, else the service account's namespace file, else default. */
const char *
hapg_effective_namespace(void)
{
	static char ns[HAPG_NAME_LEN];
	FILE	   *f;

	if (hapg_namespace && hapg_namespace[0])
		return hapg_namespace;
	f = fopen(HAPG_SA_DIR "/namespace", "r");
	if (f != NULL)
	{
		size_t		n = fread(ns, 1, sizeof(ns) - 1, f);

		fclose(f);
		while (n > 0 && (ns[n - 1] == '\n' || ns[n - 1] == ' '))
			n--;
		ns[n] = '\0';
		if (hapg_valid_member_name(ns))
			return ns;
	}
	return "default";
}

/* API URL: setting, else the in-cluster service address. */
const char *
hapg_effective_url(void)
{
	static char url[512];
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");

	if (hapg_kubernetes_url && hapg_kubernetes_url[0])
		return hapg_kubernetes_url;
	if (host == NULL || host[0] == '\0')
		return "";
	snprintf(url, sizeof(url), strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s",
			 host, port && port[0] ? port : "443");
	return url;
}

/* The address other members use: setting, else POD_IP and our port. */
const char *
hapg_effective_connect_address(void)
{
	static char addr[HAPG_ADDR_LEN];
	const char *ip = getenv("POD_IP");

	if (hapg_connect_address && hapg_connect_address[0])
		return hapg_connect_address;
	snprintf(addr, sizeof(addr), "%s:%d", ip && ip[0] ? ip : "127.0.0.1", PostPortNumber);
	return addr;
}

/* Why the worker cannot act with the current settings, if it cannot. */
bool
hapg_settings_ready(char *why, int whylen)
{
	if (hapg_cluster_name == NULL || hapg_cluster_name[0] == '\0')
	{
		snprintf(why, whylen, "hapg.cluster_name is not set; hapg is idle until it is set and the configuration reloaded");
		return false;
	}
	if (!hapg_valid_member_name(hapg_effective_member()))
	{
		snprintf(why, whylen, "member name \"%s\" (from POD_NAME or the host name) is not a valid Kubernetes name; set hapg.member_name",
				 hapg_effective_member());
		return false;
	}
	if (hapg_effective_url()[0] == '\0')
	{
		snprintf(why, whylen, "hapg.kubernetes_url is empty and KUBERNETES_SERVICE_HOST is not set; set hapg.kubernetes_url");
		return false;
	}
	return true;
}

/* Every hapg.* setting, with its check; called from _PG_init. */
void
hapg_define_settings(void)
{
	DefineCustomStringVariable("hapg.cluster_name",
							   "Name of the HA cluster: the Lease's name and the hapg.io/cluster label of member Pods.",
							   NULL, &hapg_cluster_name, "", PGC_SIGHUP, 0,
							   check_k8s_name, NULL, NULL);
	DefineCustomStringVariable("hapg.member_name",
							   "This member's name, which is also its Pod's name (default: POD_NAME, else the host name).",
							   NULL, &hapg_member_name, "", PGC_SIGHUP, 0,
							   check_k8s_name, NULL, NULL);
	DefineCustomStringVariable("hapg.namespace",
							   "Kubernetes namespace of the Lease and Pods (default: the service account's namespace, else default).",
							   NULL, &hapg_namespace, "", PGC_SIGHUP, 0,
							   check_k8s_name, NULL, NULL);
	DefineCustomStringVariable("hapg.kubernetes_url",
							   "Base URL of the Kubernetes API (default: in-cluster https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).",
							   NULL, &hapg_kubernetes_url, "", PGC_SIGHUP, 0,
							   check_url, NULL, NULL);
	DefineCustomStringVariable("hapg.token_file",
							   "File holding the bearer token for the Kubernetes API; empty sends no token.",
							   NULL, &hapg_token_file, HAPG_SA_DIR "/token", PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("hapg.ca_file",
							   "CA bundle used to verify the Kubernetes API server's certificate.",
							   NULL, &hapg_ca_file, HAPG_SA_DIR "/ca.crt", PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("hapg.ttl",
							"Lease duration: how long a leader's Lease is valid after a renewal.",
							NULL, &hapg_ttl, 30, 3, 3600, PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hapg.loop_wait",
							"Time between two runs of the HA loop.",
							NULL, &hapg_loop_wait, 10, 1, 600, PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hapg.retry_timeout",
							"Time budget for Kubernetes API calls before a leader must act.",
							NULL, &hapg_retry_timeout, 10, 1, 600, PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomStringVariable("hapg.connect_address",
							   "host:port other members use to reach this server (default: POD_IP and port).",
							   NULL, &hapg_connect_address, "", PGC_SIGHUP, 0,
							   check_connect_address, NULL, NULL);
	DefineCustomStringVariable("hapg.role_label",
							   "Pod label set to primary or replica, for Services to select on.",
							   NULL, &hapg_role_label, "role", PGC_SIGHUP, 0,
							   check_label_key, NULL, NULL);
	DefineCustomBoolVariable("hapg.nofailover",
							 "Never promote this member automatically.",
							 NULL, &hapg_nofailover, false, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("hapg.failover_priority",
							"Among equally advanced members, the higher priority wins a failover; 0 = never.",
							NULL, &hapg_failover_priority, 1, 0, 1000000, PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hapg.maximum_lag_on_failover",
							"A standby further than this behind the leader's last published position is not promoted.",
							NULL, &hapg_maximum_lag_on_failover, 1024 * 1024, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomStringVariable("hapg.replication_conninfo",
							   "Extra libpq parameters (user, password, sslmode...) for connections to the leader: streaming and pg_rewind.",
							   NULL, &hapg_replication_conninfo, "", PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
	DefineCustomBoolVariable("hapg.use_slots",
							 "Keep a physical replication slot on the leader for every member.",
							 NULL, &hapg_use_slots, true, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("hapg.switchover_timeout",
							"How long hapg_switchover() and hapg_failover() wait for the new leader to accept writes.",
							NULL, &hapg_switchover_timeout, 60, 1, 3600,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("hapg.lease_bounded_commits",
							 "Refuse commits once this member's leader Lease could have expired.",
							 "Off gives stock PostgreSQL's commit behaviour (for measuring the check's cost).",
							 &hapg_lease_bounded_commits, true, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("hapg.lease_bounded_reads",
							 "Refuse reads on a primary whose leader Lease could have expired (linearizable reads).",
							 NULL, &hapg_lease_bounded_reads, false, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("hapg.failsafe_mode",
							 "Keep a leader that cannot renew its Lease writable while every member streams from it.",
							 "The leader's value governs the cluster; see the README, \"Failsafe mode\".",
							 &hapg_failsafe_mode, false, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomEnumVariable("hapg.synchronous_mode",
							 "Synchronous replication managed by the leader: off, on (FIRST n) or quorum (ANY n).",
							 "The leader's value governs the cluster; see the README, \"Synchronous replication\".",
							 &hapg_synchronous_mode, HAPG_SYNC_OFF, sync_mode_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("hapg.synchronous_mode_strict",
							 "With too few synchronous standbys, commits wait instead of needing fewer acknowledgements.",
							 NULL, &hapg_synchronous_mode_strict, false, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("hapg.synchronous_node_count",
							"How many standbys must confirm each commit in synchronous mode.",
							NULL, &hapg_synchronous_node_count, 1, 1, HAPG_MAX_MEMBERS - 1,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("hapg.nosync",
							 "This member is never chosen as a synchronous standby.",
							 NULL, &hapg_nosync, false, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("hapg.maximum_lag_on_syncnode",
							"A synchronous standby lagging this far behind is replaced by a healthier one (-1: never).",
							NULL, &hapg_maximum_lag_on_syncnode, -1, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	MarkGUCPrefixReserved("hapg");
}

/* Every request must finish well inside the leader's renewal budget. */
void
hapg_kube_configure(KubeClient *kc, int retry_timeout_s)
{
	kube_configure(kc, hapg_effective_url(), hapg_token_file, hapg_ca_file,
				   Max(500, retry_timeout_s * 1000 / 2));
}

/*
 * hapg.failsafe_mode, if the settings it relies on allow it; otherwise
 * plain fencing, said once per change.
 */
static void
load_failsafe(HapgConfig *cfg)
{
	const char *err = hapg_failsafe_mode ?
		hapg_failsafe_settings_error(cfg->ttl, hapg_lease_bounded_commits,
									 wal_receiver_status_interval) : NULL;
	bool		on = hapg_failsafe_mode && err == NULL;

	if (err && (cfg->failsafe || !cfg->ready))
		ereport(WARNING,
				(errmsg("hapg: failsafe mode is off: %s", err),
				 errhint("Without it, a leader that cannot renew its Lease fences itself; fix the setting and reload.")));
	else if (on != cfg->failsafe && cfg->ready)
		ereport(LOG, (errmsg("hapg: failsafe mode is %s", on ? "on" : "off")));
	cfg->failsafe = on;
}

/*
 * Take the new settings into cfg if they hang together; otherwise keep the
 * old ones (or stay idle).  Returns true when the cluster or this member's
 * identity changed: the worker must forget everything it knew.
 */
bool
hapg_load_config(HapgConfig *cfg, bool first)
{
	char		why[HAPG_MSG_LEN];
	char		msg[HAPG_MSG_LEN];
	bool		was_ready = cfg->ready;
	bool		changed;
	char		old_why[HAPG_MSG_LEN];

	strlcpy(old_why, cfg->config_error, sizeof(old_why));
	if (!hapg_timing_valid(hapg_ttl, hapg_loop_wait, hapg_retry_timeout, msg, sizeof(msg)))
	{
		if (cfg->timing_valid)
		{
			ereport(WARNING,
					(errmsg("hapg: invalid timing settings ignored: %s", msg),
					 errdetail("Keeping hapg.ttl = %ds, hapg.loop_wait = %ds, hapg.retry_timeout = %ds.",
							   cfg->ttl, cfg->loop_wait, cfg->retry_timeout),
					 errhint("Choose values with hapg.loop_wait + 2 * hapg.retry_timeout <= hapg.ttl and reload.")));
			snprintf(cfg->config_error, sizeof(cfg->config_error),
					 "invalid timing settings ignored: %s", msg);
		}
		else
		{
			if (strcmp(cfg->config_error, msg) != 0)
				ereport(WARNING,
						(errmsg("hapg: invalid timing settings: %s; hapg is idle", msg),
						 errhint("Choose values with hapg.loop_wait + 2 * hapg.retry_timeout <= hapg.ttl and reload.")));
			strlcpy(cfg->config_error, msg, sizeof(cfg->config_error));
			cfg->ready = false;
			return false;
		}
	}
	else
	{
		cfg->ttl = hapg_ttl;
		cfg->loop_wait = hapg_loop_wait;
		cfg->retry_timeout = hapg_retry_timeout;
		cfg->timing_valid = true;
		cfg->config_error[0] = '\0';
	}

	if (!hapg_settings_ready(why, sizeof(why)))
	{
		if (was_ready || first || strcmp(old_why, why) != 0)
			ereport(LOG, (errmsg("hapg: %s", why)));
		strlcpy(cfg->config_error, why, sizeof(cfg->config_error));
		cfg->ready = false;
		return false;
	}

	changed = cfg->ready && (strcmp(cfg->cluster, hapg_cluster_name) != 0 ||
							 strcmp(cfg->member, hapg_effective_member()) != 0 ||
							 strcmp(cfg->namespace, hapg_effective_namespace()) != 0);
	strlcpy(cfg->cluster, hapg_cluster_name, sizeof(cfg->cluster));
	strlcpy(cfg->member, hapg_effective_member(), sizeof(cfg->member));
	strlcpy(cfg->namespace, hapg_effective_namespace(), sizeof(cfg->namespace));
	strlcpy(cfg->role_label, hapg_role_label, sizeof(cfg->role_label));
	strlcpy(cfg->connect_address, hapg_effective_connect_address(),
			sizeof(cfg->connect_address));
	load_failsafe(cfg);
	if (!cfg->ready)
		ereport(LOG,
				(errmsg("hapg: member \"%s\" of cluster \"%s\" in namespace \"%s\", API %s, ttl %ds, loop_wait %ds, retry_timeout %ds",
						cfg->member, cfg->cluster, cfg->namespace, hapg_effective_url(),
						cfg->ttl, cfg->loop_wait, cfg->retry_timeout)));
	cfg->ready = true;
	return changed;
}
