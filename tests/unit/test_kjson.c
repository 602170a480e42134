/* Unit tests of the Kubernetes JSON code (src/kjson.c). */
#include <stdlib.h>

#include "unit.h"
#include "kjson.h"

static const char *LEASE =
"{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\","
"\"metadata\":{\"name\":\"c1\",\"namespace\":\"default\",\"resourceVersion\":\"77\","
"\"annotations\":{\"other.io/x\":\"keep\",\"hapg.io/lsn\":\"0/3000060\",\"hapg.io/timeline\":\"2\","
"\"hapg.io/members\":\"{\\\"pg-1\\\":{\\\"lsn\\\":\\\"0/3000000\\\",\\\"state\\\":\\\"streaming\\\"},\\\"bad\\\":{\\\"lsn\\\":7}}\"}},"
"\"spec\":{\"holderIdentity\":\"pg-0\",\"leaseDurationSeconds\":30,\"leaseTransitions\":4,"
"\"renewTime\":\"2026-11-22T05:00:00.000000Z\"}}";

static json_object *
parse(const char *s)
{
	json_object *o = NULL;
	char		err[256];

	hapg_parse_json(s, strlen(s), &o, err, sizeof(err));
	return o;
}

TEST(lease_is_parsed)
{
	json_object *o = parse(LEASE);
	HapgLeaseInfo li;
	char		err[256];

	CHECK(o != NULL);
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK_STR(li.view.holder, "pg-0");
	CHECK_STR(li.view.resource_version, "77");
	CHECK(li.view.duration_s == 30);
	CHECK(li.view.transitions == 4);
	CHECK(li.has_leader_lsn && li.leader_lsn == 0x3000060);
	CHECK(li.leader_timeline == 2);
	CHECK(li.npos == 1);		/* the malformed entry is skipped */
	CHECK_STR(li.pos[0].name, "pg-1");
	CHECK(li.pos[0].lsn == 0x3000000);
	CHECK_STR(li.pos[0].state, "streaming");
	json_object_put(o);
}

TEST(lease_errors)
{
	HapgLeaseInfo li;
	char		err[256];
	json_object *o = parse("{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":\"1\"}}");

	CHECK(!hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(strstr(err, "expected a Lease") != NULL);
	json_object_put(o);
	o = parse("{\"kind\":\"Lease\",\"metadata\":{}}");
	CHECK(!hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(strstr(err, "resourceVersion") != NULL);
	json_object_put(o);
	/* wrong types are ignored, not trusted */
	o = parse("{\"kind\":\"Lease\",\"metadata\":{\"resourceVersion\":\"5\"},\"spec\":{\"holderIdentity\":17,\"leaseDurationSeconds\":\"30\"}}");
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK_STR(li.view.holder, "");
	CHECK(li.view.duration_s == 0);
	json_object_put(o);
}

TEST(overlong_holder_rejected)
{
	char		buf[1024];
	HapgLeaseInfo li;
	char		err[256];
	json_object *o;
	char		name[200];

	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	snprintf(buf, sizeof(buf), "{\"kind\":\"Lease\",\"metadata\":{\"resourceVersion\":\"5\"},\"spec\":{\"holderIdentity\":\"%s\"}}", name);
	o = parse(buf);
	CHECK(!hapg_parse_lease(o, &li, err, sizeof(err)));
	json_object_put(o);
}

/* Found by tests/fuzz: a holder goes into logs, the rejoin note and the guard's line. */
TEST(holder_must_be_a_member_name)
{
	HapgLeaseInfo li;
	char		err[256];
	json_object *o;

	o = parse("{\"kind\":\"Lease\",\"metadata\":{\"resourceVersion\":\"5\"},\"spec\":{\"holderIdentity\":\"pg-0\\nsource=host=evil\"}}");
	CHECK(!hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(strstr(err, "not a member name") != NULL);
	json_object_put(o);
	o = parse("{\"kind\":\"Lease\",\"metadata\":{\"resourceVersion\":\"5\"},\"spec\":{\"holderIdentity\":\"a|b\"}}");
	CHECK(!hapg_parse_lease(o, &li, err, sizeof(err)));
	json_object_put(o);
	o = parse("{\"kind\":\"Lease\",\"metadata\":{\"resourceVersion\":\"5\"},\"spec\":{\"holderIdentity\":\"pg-0.db\"}}");
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK_STR(li.view.holder, "pg-0.db");
	json_object_put(o);
}

/* What hapg_parse_pod makes of a published connect_address. */
static void
check_address(const char *addr, const char *expect)
{
	char	   *status = hapg_build_status_json("replica", "streaming", 3, 1, addr, "1.0", false, false, 1);
	char	   *patch = hapg_build_pod_patch("role", "replica", status);
	json_object *o = parse(patch);
	HapgPodInfo p;
	char		err[256];

	json_object_object_add(json_object_object_get(o, "metadata"), "name",
						   json_object_new_string("pg-1"));
	CHECK(hapg_parse_pod(o, "role", &p, err, sizeof(err)));
	CHECK_STR(p.connect_address, expect);
	CHECK(p.has_status);
	json_object_put(o);
	free(patch);
	free(status);
}

/* Found by tests/fuzz: a published address is pasted into a connection string. */
TEST(connect_address_must_be_host_port)
{
	check_address("10.0.0.1 host=evil:5432", "");
	check_address("evil:5432\nsource=x", "");
	check_address("h'x:1", "");
	check_address("a/b:5432", "");
	check_address("10.0.0.2:5432", "10.0.0.2:5432");
	check_address("[fd00::1]:5432", "[fd00::1]:5432");
	check_address("pg-1.pg.default.svc:5432", "pg-1.pg.default.svc:5432");
}

TEST(garbage_is_reported)
{
	json_object *o;
	char		err[256];

	CHECK(!hapg_parse_json("<html>502 Bad Gateway</html>", 28, &o, err, sizeof(err)));
	CHECK(o == NULL);
	CHECK(strstr(err, "invalid JSON") != NULL);
	CHECK(!hapg_parse_json("{\"a\":", 5, &o, err, sizeof(err)));
	CHECK(strstr(err, "truncated") != NULL);
	CHECK(!hapg_parse_json("{} {}", 5, &o, err, sizeof(err)));
	CHECK(strstr(err, "trailing") != NULL);
	CHECK(!hapg_parse_json("[1,2]", 5, &o, err, sizeof(err)));
	CHECK(!hapg_parse_json("", 0, &o, err, sizeof(err)));
	CHECK(hapg_parse_json("{}\n", 3, &o, err, sizeof(err)));
	json_object_put(o);
}

TEST(pod_with_status)
{
	char	   *status = hapg_build_status_json("replica", "streaming", 3, 0x5000028,
												"10.0.0.2:5432", "1.0", true, true, 7);
	char	   *patch = hapg_build_pod_patch("role", "replica", status);
	json_object *o = parse(patch);
	HapgPodInfo p;
	char		err[256];

	/* a merge patch has the shape of the object: parse it as a Pod */
	json_object_object_add(json_object_object_get(o, "metadata"), "name",
						   json_object_new_string("pg-1"));
	CHECK(hapg_parse_pod(o, "role", &p, err, sizeof(err)));
	CHECK_STR(p.name, "pg-1");
	CHECK_STR(p.role_label, "replica");
	CHECK(p.has_status);
	CHECK_STR(p.role, "replica");
	CHECK_STR(p.state, "streaming");
	CHECK(p.timeline == 3);
	CHECK(p.lsn == 0x5000028);
	CHECK_STR(p.connect_address, "10.0.0.2:5432");
	CHECK_STR(p.version, "1.0");
	CHECK(p.nofailover);
	CHECK(p.priority == 7);
	/* another label key sees no role label */
	CHECK(hapg_parse_pod(o, "example.com/role", &p, err, sizeof(err)));
	CHECK_STR(p.role_label, "");
	json_object_put(o);
	free(patch);
	free(status);
}

TEST(label_removal_is_null)
{
	char	   *patch = hapg_build_pod_patch("role", NULL, "{}");

	CHECK(strstr(patch, "\"role\":null") != NULL);
	free(patch);
}

TEST(damaged_status_annotation)
{
	json_object *o = parse("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"pg-2\",\"annotations\":{\"hapg.io/status\":\"not json\"}}}");
	HapgPodInfo p;
	char		err[256];

	CHECK(hapg_parse_pod(o, "role", &p, err, sizeof(err)));
	CHECK(!p.has_status);
	json_object_put(o);
}

TEST(pod_list)
{
	json_object *o = parse("{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"9\"},\"items\":["
						   "{\"metadata\":{\"name\":\"pg-0\",\"labels\":{\"role\":\"primary\"}}},"
						   "{\"metadata\":{}},"
						   "{\"metadata\":{\"name\":\"pg-1\"}}]}");
	HapgPodInfo pods[4];
	char		rv[64];
	char		err[256];
	int			n = hapg_parse_pod_list(o, "role", pods, 4, rv, sizeof(rv), err, sizeof(err));

	CHECK(n == 2);
	CHECK_STR(rv, "9");
	CHECK_STR(pods[0].role_label, "primary");
	CHECK_STR(pods[1].name, "pg-1");
	json_object_put(o);

	o = parse("{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"9\"},\"items\":{}}");
	CHECK(hapg_parse_pod_list(o, "role", pods, 4, rv, sizeof(rv), err, sizeof(err)) == -1);
	json_object_put(o);
	o = parse("{\"kind\":\"Status\",\"metadata\":{}}");
	CHECK(hapg_parse_pod_list(o, "role", pods, 4, rv, sizeof(rv), err, sizeof(err)) == -1);
	json_object_put(o);
}

TEST(watch_events)
{
	const char *line = "{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Lease\",\"metadata\":{\"name\":\"c1\",\"resourceVersion\":\"12\"}}}";
	char		type[32];
	json_object *o;
	char		err[256];

	CHECK(hapg_parse_watch_event(line, strlen(line), type, sizeof(type), &o, err, sizeof(err)));
	CHECK_STR(type, "MODIFIED");
	CHECK_STR(hapg_object_rv(o), "12");
	CHECK_STR(hapg_object_name(o), "c1");
	json_object_put(o);
	CHECK(!hapg_parse_watch_event("{\"type\":\"ADDED\"}", 16, type, sizeof(type), &o, err, sizeof(err)));
	CHECK(!hapg_parse_watch_event("garbage", 7, type, sizeof(type), &o, err, sizeof(err)));
}

TEST(status_message)
{
	const char *body = "{\"kind\":\"Status\",\"status\":\"Failure\",\"reason\":\"Conflict\",\"message\":\"the object has been modified\",\"code\":409}";
	char		buf[256];

	hapg_status_message(body, strlen(body), buf, sizeof(buf));
	CHECK_STR(buf, "Conflict: the object has been modified");
	hapg_status_message("oops", 4, buf, sizeof(buf));
	CHECK_STR(buf, "");
}

/* A replace keeps what others wrote and carries the read's resourceVersion. */
TEST(build_lease_preserves_foreign_fields)
{
	json_object *o = parse(LEASE);
	HapgLeaseWrite w;
	char	   *body;
	json_object *b;
	HapgLeaseInfo li;
	char		err[256];

	memset(&w, 0, sizeof(w));
	w.name = "c1";
	w.namespace = "default";
	w.cluster = "c1";
	w.holder = "pg-0";
	w.duration_s = 30;
	w.transitions = 4;
	w.renew_time = "2026-11-22T05:00:10.000000Z";
	w.resource_version = "77";
	w.leader_lsn = 0x4000000;
	w.leader_timeline = 2;
	body = hapg_build_lease(o, &w);
	b = parse(body);
	CHECK(strstr(body, "\"other.io/x\":\"keep\"") != NULL);
	CHECK(strstr(body, "\"hapg.io/cluster\":\"c1\"") != NULL);
	CHECK(hapg_parse_lease(b, &li, err, sizeof(err)));
	CHECK_STR(li.view.resource_version, "77");
	CHECK(li.leader_lsn == 0x4000000);
	/* the cached read is not modified */
	CHECK(strstr(json_object_to_json_string(o), "3000060") != NULL);
	CHECK(strstr(json_object_to_json_string(o), "4000000") == NULL);
	json_object_put(b);
	free(body);

	w.resource_version = NULL;
	w.acquire_time = "2026-11-22T05:00:10.000000Z";
	body = hapg_build_lease(NULL, &w);
	CHECK(strstr(body, "resourceVersion") == NULL);
	CHECK(strstr(body, "\"acquireTime\"") != NULL);
	free(body);
	json_object_put(o);
}

TEST(members_json_round_trip)
{
	HapgMemberPos pos[2];
	char	   *s;
	char	   *ann;
	json_object *o;
	HapgLeaseInfo li;
	char		err[256];
	char		doc[1024];

	memset(pos, 0, sizeof(pos));
	strcpy(pos[0].name, "pg-1");
	pos[0].lsn = 0x10;
	strcpy(pos[0].state, "streaming");
	strcpy(pos[1].name, "pg-2");
	pos[1].lsn = 0x20;
	strcpy(pos[1].state, "catchup");
	s = hapg_build_members_json(pos, 2);
	o = json_object_new_string(s);
	ann = strdup(json_object_to_json_string(o));
	json_object_put(o);
	snprintf(doc, sizeof(doc), "{\"kind\":\"Lease\",\"metadata\":{\"resourceVersion\":\"1\",\"annotations\":{\"hapg.io/members\":%s}}}", ann);
	o = parse(doc);
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(li.npos == 2);
	CHECK(li.pos[1].lsn == 0x20);
	CHECK_STR(li.pos[1].state, "catchup");
	json_object_put(o);
	free(ann);
	free(s);
}

TEST(candidacy_round_trip)
{
	char	   *patch = hapg_build_candidacy_patch("42", true, 0x5000028, 2, 7);
	json_object *o = parse(patch);
	HapgPodInfo p;
	char		err[256];

	json_object_object_add(json_object_object_get(o, "metadata"), "name",
						   json_object_new_string("pg-2"));
	CHECK(hapg_parse_pod(o, "role", &p, err, sizeof(err)));
	CHECK(p.has_candidacy);
	CHECK_STR(p.cand_term, "42");
	CHECK(p.cand_eligible);
	CHECK(p.cand_lsn == 0x5000028);
	CHECK(p.cand_timeline == 2);
	CHECK(p.cand_priority == 7);
	json_object_put(o);
	free(patch);

	o = parse("{\"metadata\":{\"name\":\"x\",\"annotations\":{\"hapg.io/candidacy\":\"{\\\"term\\\":\\\"1\\\"}\"}}}");
	CHECK(o != NULL);
	CHECK(hapg_parse_pod(o, "role", &p, err, sizeof(err)));
	CHECK(!p.has_candidacy);	/* no lsn: not a usable candidacy */
	json_object_put(o);
}

/* History survives renewals, grows by one per leader change, and is bounded. */
TEST(history_append_and_bound)
{
	json_object *o = parse(LEASE);
	HapgLeaseWrite w;
	HapgHistoryEntry h;
	HapgLeaseInfo li;
	char		err[256];
	int			i;

	memset(&w, 0, sizeof(w));
	w.name = w.namespace = w.cluster = "c1";
	w.resource_version = "77";
	w.holder = "pg-1";
	w.renew_time = "2026-11-22T05:00:10.000000Z";
	memset(&h, 0, sizeof(h));
	for (i = 0; i < HAPG_MAX_HISTORY + 3; i++)
	{
		char	   *body;

		h.old_timeline = i + 1;
		h.new_timeline = i + 2;
		h.lsn = 0x1000 * (i + 1);
		snprintf(h.reason, sizeof(h.reason), "failover %d", i);
		strcpy(h.leader, "pg-1");
		strcpy(h.time, "2026-11-22T05:00:10Z");
		w.add_history = &h;
		body = hapg_build_lease(o, &w);
		json_object_put(o);
		o = parse(body);
		free(body);
	}
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(li.nhistory == HAPG_MAX_HISTORY);
	CHECK(li.history[HAPG_MAX_HISTORY - 1].new_timeline == HAPG_MAX_HISTORY + 4);
	CHECK_STR(li.history[0].reason, "failover 3");
	CHECK(li.history[0].lsn == 0x4000);
	/* a renewal without a new entry keeps it */
	w.add_history = NULL;
	{
		char	   *body = hapg_build_lease(o, &w);

		json_object_put(o);
		o = parse(body);
		free(body);
	}
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(li.nhistory == HAPG_MAX_HISTORY);
	json_object_put(o);
}

TEST(microtime)
{
	char		buf[40];

	hapg_format_microtime(1795323600123456LL, buf, sizeof(buf));
	CHECK_STR(buf, "2026-11-22T05:00:00.123456Z");
}

/* LEASE with one more annotation, set to value as a JSON string. */
static json_object *
lease_with(const char *key, const char *value)
{
	json_object *o = parse(LEASE);
	json_object *meta = json_object_object_get(o, "metadata");

	json_object_object_add(json_object_object_get(meta, "annotations"), key,
						   json_object_new_string(value));
	return o;
}

/* The string value of one annotation of a built body, or NULL. */
static const char *
annotation(json_object *o, const char *key)
{
	json_object *meta;
	json_object *ann;
	json_object *v;

	if (!json_object_object_get_ex(o, "metadata", &meta) ||
		!json_object_object_get_ex(meta, "annotations", &ann) ||
		!json_object_object_get_ex(ann, key, &v) ||
		!json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* A spec field of a built body as a string, or NULL. */
static const char *
spec_str(json_object *o, const char *key)
{
	json_object *spec;
	json_object *v;

	if (!json_object_object_get_ex(o, "spec", &spec) ||
		!json_object_object_get_ex(spec, key, &v) ||
		!json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* s is present and equal to want (a missing value fails, never crashes). */
static bool
str_is(const char *s, const char *want)
{
	return s != NULL && strcmp(s, want) == 0;
}

/* hapg.io/config pauses the cluster only when it says so with a boolean. */
TEST(lease_config_paused)
{
	const char *cases[] = {"{\"paused\":true}", "{\"paused\":false}",
		"{\"paused\":\"true\"}", "{\"paused\":1}", "{}"};
	HapgLeaseInfo li;
	char		err[256];
	json_object *o;
	int			i;

	for (i = 0; i < 5; i++)
	{
		o = lease_with(HAPG_CONFIG_ANNOTATION, cases[i]);
		CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
		CHECK(li.paused == (i == 0));
		json_object_put(o);
	}
	o = parse(LEASE);
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(!li.paused);
	CHECK(!li.switchover.pending);
	CHECK(!li.has_handover);
	json_object_put(o);
}

/* A target name too long to be a member is not guessed at: not pending. */
TEST(switchover_overlong_target_ignored)
{
	char		val[256];
	char		longname[81];
	HapgLeaseInfo li;
	char		err[256];
	json_object *o;

	memset(longname, 'a', 80);
	longname[80] = '\0';
	snprintf(val, sizeof(val), "{\"from\":\"pg-0\",\"to\":\"%s\",\"requested_at_us\":5}", longname);
	o = lease_with(HAPG_SWITCHOVER_ANNOTATION, val);
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(!li.switchover.pending);
	json_object_put(o);
}

/* Every field of a pending switchover survives the annotation. */
TEST(switchover_json_round_trip)
{
	HapgSwitchover sw;
	HapgLeaseInfo li;
	char		err[256];
	char	   *s;
	json_object *o;

	memset(&sw, 0, sizeof(sw));
	sw.pending = true;
	strcpy(sw.from, "pg-0");
	strcpy(sw.to, "pg-2");
	sw.scheduled_at_us = INT64_C(9007199254740993);	/* not exact as a double */
	sw.requested_at_us = INT64_C(1795323600123456);
	strcpy(sw.requested_by, "pg-1");
	s = hapg_build_switchover_json(&sw);
	o = lease_with(HAPG_SWITCHOVER_ANNOTATION, s);
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(li.switchover.pending);
	CHECK_STR(li.switchover.from, "pg-0");
	CHECK_STR(li.switchover.to, "pg-2");
	CHECK(li.switchover.scheduled_at_us == INT64_C(9007199254740993));
	CHECK(li.switchover.requested_at_us == INT64_C(1795323600123456));
	CHECK_STR(li.switchover.requested_by, "pg-1");
	/* the rest of the Lease is read as before */
	CHECK_STR(li.view.holder, "pg-0");
	CHECK(li.leader_lsn == 0x3000060);
	json_object_put(o);
	free(s);

	/* to the healthiest replica, at once */
	strcpy(sw.to, "");
	sw.scheduled_at_us = 0;
	s = hapg_build_switchover_json(&sw);
	o = lease_with(HAPG_SWITCHOVER_ANNOTATION, s);
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(li.switchover.pending);
	CHECK_STR(li.switchover.to, "");
	CHECK(li.switchover.scheduled_at_us == 0);
	CHECK(li.switchover.requested_at_us == INT64_C(1795323600123456));
	json_object_put(o);
	free(s);

	/* without "from" it is nobody's switchover: not pending */
	o = lease_with(HAPG_SWITCHOVER_ANNOTATION, "{\"to\":\"pg-2\",\"requested_at_us\":5}");
	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(!li.switchover.pending);
	json_object_put(o);
}

/* A hand-over carries from, to, the WAL position to wait for and why. */
TEST(handover_json_round_trip)
{
	HapgLeaseInfo li;
	char		err[256];
	char	   *s = hapg_build_handover_json("pg-0", "pg-1", UINT64_C(0x1A00000028),
											 "switchover");
	json_object *o = lease_with(HAPG_HANDOVER_ANNOTATION, s);

	CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
	CHECK(li.has_handover);
	CHECK_STR(li.handover_from, "pg-0");
	CHECK_STR(li.handover_to, "pg-1");
	CHECK(li.handover_lsn == UINT64_C(0x1A00000028));
	CHECK_STR(li.handover_reason, "switchover");
	json_object_put(o);
	free(s);
}

/* A hand-over without a position to wait for is unusable: ignored. */
TEST(handover_without_lsn_ignored)
{
	const char *cases[] = {
		"{\"from\":\"pg-0\",\"to\":\"pg-1\",\"reason\":\"switchover\"}",
		"{\"from\":\"pg-0\",\"to\":\"pg-1\",\"lsn\":\"garbage\"}",
		"{\"from\":\"pg-0\",\"to\":\"pg-1\",\"lsn\":12345}",
		"{\"from\":\"pg-0\",\"lsn\":\"0/5000\"}",
		"{\"from\":\"pg-0\",\"to\":7,\"lsn\":\"0/5000\"}"};
	HapgLeaseInfo li;
	char		err[256];
	int			i;

	for (i = 0; i < 5; i++)
	{
		json_object *o = lease_with(HAPG_HANDOVER_ANNOTATION, cases[i]);

		CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
		CHECK(!li.has_handover);
		CHECK_STR(li.view.holder, "pg-0");
		json_object_put(o);
	}
}

/* Damaged steering annotations are as if absent, never fatal to the Lease. */
TEST(damaged_steering_annotations_ignored)
{
	const char *damaged[] = {"not json", "{", "[1,2]", "\"paused\"", "{} {}", "",
	"null"};
	const char *keys[] = {HAPG_CONFIG_ANNOTATION, HAPG_SWITCHOVER_ANNOTATION,
	HAPG_HANDOVER_ANNOTATION};
	HapgLeaseInfo li;
	char		err[256];
	int			i,
				k;

	for (k = 0; k < 3; k++)
		for (i = 0; i < 7; i++)
		{
			json_object *o = lease_with(keys[k], damaged[i]);

			CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
			CHECK_STR(li.view.holder, "pg-0");
			CHECK_STR(li.view.resource_version, "77");
			CHECK(li.npos == 1);
			CHECK(!li.paused);
			CHECK(!li.switchover.pending);
			CHECK(!li.has_handover);
			json_object_put(o);
		}

	/* one damaged annotation does not hide the others */
	{
		json_object *o = lease_with(HAPG_SWITCHOVER_ANNOTATION, "{\"from\":");
		json_object *ann = json_object_object_get(json_object_object_get(o, "metadata"),
												  "annotations");

		json_object_object_add(ann, HAPG_CONFIG_ANNOTATION,
							   json_object_new_string("{\"paused\":true}"));
		json_object_object_add(ann, HAPG_HANDOVER_ANNOTATION,
							   json_object_new_string("{\"to\":\"pg-1\",\"lsn\":\"0/10\"}"));
		CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
		CHECK(li.paused);
		CHECK(!li.switchover.pending);
		CHECK(li.has_handover);
		CHECK(li.handover_lsn == 0x10);
		json_object_put(o);
	}
	/* a non-string annotation value is ignored too */
	{
		json_object *o = parse(LEASE);
		json_object *ann = json_object_object_get(json_object_object_get(o, "metadata"),
												  "annotations");
		json_object *cfg = json_object_new_object();

		json_object_object_add(cfg, "paused", json_object_new_boolean(true));
		json_object_object_add(ann, HAPG_CONFIG_ANNOTATION, cfg);
		CHECK(hapg_parse_lease(o, &li, err, sizeof(err)));
		CHECK(!li.paused);
		json_object_put(o);
	}
}

/*
 * A member that does not hold the Lease changes only what its request is
 * about, renewTime included, and carries the read's resourceVersion.
 */
TEST(lease_edit_keeps_the_rest)
{
	json_object *o = lease_with("hapg.io/switchover", "{\"from\":\"pg-0\",\"to\":\"pg-2\"}");
	HapgLeaseEdit e;
	char	   *body;
	json_object *b;
	HapgLeaseInfo li;
	char		err[256];

	json_object_object_add(json_object_object_get(o, "metadata"), "managedFields",
						   json_object_new_array());
	memset(&e, 0, sizeof(e));
	e.resource_version = "78";
	e.config_json = "{\"paused\":true}";
	body = hapg_build_lease_edit(o, &e);
	CHECK(body != NULL);
	b = parse(body);
	CHECK(b != NULL);
	CHECK(hapg_parse_lease(b, &li, err, sizeof(err)));
	CHECK_STR(li.view.resource_version, "78");
	CHECK_STR(li.view.holder, "pg-0");
	CHECK(li.view.duration_s == 30);
	CHECK(li.view.transitions == 4);
	CHECK(li.leader_lsn == 0x3000060);
	CHECK(li.npos == 1);
	CHECK(li.paused);
	/* NULL kept the switchover as read */
	CHECK(li.switchover.pending);
	CHECK_STR(li.switchover.to, "pg-2");
	CHECK(str_is(spec_str(b, "renewTime"), "2026-11-22T05:00:00.000000Z"));
	CHECK(str_is(annotation(b, "other.io/x"), "keep"));
	CHECK(strstr(body, "managedFields") == NULL);
	/* the cached read is not modified */
	CHECK_STR(hapg_object_rv(o), "77");
	CHECK(strstr(json_object_to_json_string(o), "paused") == NULL);
	CHECK(strstr(json_object_to_json_string(o), "managedFields") != NULL);
	json_object_put(b);
	free(body);

	/* "" removes, a value replaces */
	e.config_json = "";
	e.switchover_json = "";
	e.handover_json = "{\"to\":\"pg-1\",\"lsn\":\"0/20\"}";
	body = hapg_build_lease_edit(o, &e);
	b = parse(body);
	CHECK(annotation(b, HAPG_SWITCHOVER_ANNOTATION) == NULL);
	CHECK(annotation(b, HAPG_CONFIG_ANNOTATION) == NULL);
	CHECK(str_is(annotation(b, HAPG_HANDOVER_ANNOTATION), "{\"to\":\"pg-1\",\"lsn\":\"0/20\"}"));
	CHECK(str_is(annotation(b, "other.io/x"), "keep"));
	CHECK(str_is(spec_str(b, "holderIdentity"), "pg-0"));
	json_object_put(b);
	free(body);

	/* holder "" releases the Lease, keeping renewTime */
	e.holder = "";
	body = hapg_build_lease_edit(o, &e);
	b = parse(body);
	CHECK(hapg_parse_lease(b, &li, err, sizeof(err)));
	CHECK_STR(li.view.holder, "");
	CHECK(li.has_handover);
	CHECK_STR(li.handover_to, "pg-1");
	CHECK(li.handover_lsn == 0x20);
	CHECK(str_is(spec_str(b, "renewTime"), "2026-11-22T05:00:00.000000Z"));
	json_object_put(b);
	free(body);

	/* nothing to edit without a read */
	CHECK(hapg_build_lease_edit(NULL, &e) == NULL);
	json_object_put(o);
}

/* An edit on a Lease without annotations or spec creates what it needs. */
TEST(lease_edit_minimal_lease)
{
	json_object *o = parse("{\"kind\":\"Lease\",\"metadata\":{\"resourceVersion\":\"3\"}}");
	HapgLeaseEdit e;
	char	   *body;
	json_object *b;

	memset(&e, 0, sizeof(e));
	e.resource_version = "3";
	e.config_json = "{\"paused\":true}";
	e.switchover_json = "";		/* removing what is not there is fine */
	e.holder = "";
	body = hapg_build_lease_edit(o, &e);
	b = parse(body);
	CHECK(b != NULL);
	CHECK(str_is(annotation(b, HAPG_CONFIG_ANNOTATION), "{\"paused\":true}"));
	CHECK(str_is(spec_str(b, "holderIdentity"), ""));
	CHECK(spec_str(b, "renewTime") == NULL);
	json_object_put(b);
	free(body);
	json_object_put(o);
}

/* The leader's writes keep, remove or set the steering annotations. */
TEST(build_lease_steering_annotations)
{
	json_object *o = lease_with(HAPG_CONFIG_ANNOTATION, "{\"paused\":true}");
	json_object *ann = json_object_object_get(json_object_object_get(o, "metadata"),
											  "annotations");
	HapgLeaseWrite w;
	char	   *body;
	json_object *b;
	HapgLeaseInfo li;
	char		err[256];

	json_object_object_add(ann, HAPG_SWITCHOVER_ANNOTATION,
						   json_object_new_string("{\"from\":\"pg-0\",\"to\":\"pg-1\"}"));
	json_object_object_add(ann, HAPG_HANDOVER_ANNOTATION,
						   json_object_new_string("{\"to\":\"pg-1\",\"lsn\":\"0/30\"}"));
	memset(&w, 0, sizeof(w));
	w.name = w.namespace = w.cluster = "c1";
	w.holder = "pg-0";
	w.duration_s = 30;
	w.transitions = 4;
	w.renew_time = "2026-11-22T05:00:10.000000Z";
	w.resource_version = "77";
	w.leader_lsn = 0x4000000;

	/* NULL keeps all three */
	body = hapg_build_lease(o, &w);
	b = parse(body);
	CHECK(hapg_parse_lease(b, &li, err, sizeof(err)));
	CHECK(li.paused);
	CHECK(li.switchover.pending);
	CHECK_STR(li.switchover.to, "pg-1");
	CHECK(li.has_handover);
	CHECK(li.handover_lsn == 0x30);
	json_object_put(b);
	free(body);

	/* "" removes them: a renewal that drops a carried-out switchover */
	w.config_json = "";
	w.switchover_json = "";
	w.handover_json = "";
	body = hapg_build_lease(o, &w);
	b = parse(body);
	CHECK(hapg_parse_lease(b, &li, err, sizeof(err)));
	CHECK(!li.paused);
	CHECK(!li.switchover.pending);
	CHECK(!li.has_handover);
	CHECK(annotation(b, HAPG_CONFIG_ANNOTATION) == NULL);
	CHECK(annotation(b, HAPG_SWITCHOVER_ANNOTATION) == NULL);
	CHECK(annotation(b, HAPG_HANDOVER_ANNOTATION) == NULL);
	CHECK(str_is(annotation(b, "other.io/x"), "keep"));
	CHECK(str_is(annotation(b, HAPG_LSN_ANNOTATION), "0/4000000"));
	json_object_put(b);
	free(body);

	/* values replace them */
	w.config_json = "{\"paused\":false}";
	w.switchover_json = "{\"from\":\"pg-0\",\"to\":\"pg-2\"}";
	w.handover_json = "{\"to\":\"pg-2\",\"lsn\":\"0/40\"}";
	body = hapg_build_lease(o, &w);
	b = parse(body);
	CHECK(hapg_parse_lease(b, &li, err, sizeof(err)));
	CHECK(!li.paused);
	CHECK_STR(li.switchover.to, "pg-2");
	CHECK_STR(li.handover_to, "pg-2");
	CHECK(li.handover_lsn == 0x40);
	CHECK(str_is(spec_str(b, "renewTime"), "2026-11-22T05:00:10.000000Z"));
	json_object_put(b);
	free(body);

	/* a create carries them too, and "" on a create is harmless */
	w.resource_version = NULL;
	w.config_json = "{\"paused\":true}";
	w.switchover_json = "";
	w.handover_json = NULL;
	body = hapg_build_lease(NULL, &w);
	b = parse(body);
	CHECK(!hapg_parse_lease(b, &li, err, sizeof(err)));	/* no resourceVersion yet */
	CHECK(str_is(annotation(b, HAPG_CONFIG_ANNOTATION), "{\"paused\":true}"));
	CHECK(annotation(b, HAPG_SWITCHOVER_ANNOTATION) == NULL);
	CHECK(annotation(b, HAPG_HANDOVER_ANNOTATION) == NULL);
	json_object_put(b);
	free(body);
	json_object_put(o);
}

void
run_kjson_tests(void)
{
	RUN(lease_is_parsed);
	RUN(lease_errors);
	RUN(overlong_holder_rejected);
	RUN(holder_must_be_a_member_name);
	RUN(connect_address_must_be_host_port);
	RUN(garbage_is_reported);
	RUN(pod_with_status);
	RUN(label_removal_is_null);
	RUN(damaged_status_annotation);
	RUN(pod_list);
	RUN(watch_events);
	RUN(status_message);
	RUN(build_lease_preserves_foreign_fields);
	RUN(members_json_round_trip);
	RUN(candidacy_round_trip);
	RUN(history_append_and_bound);
	RUN(microtime);
	RUN(lease_config_paused);
	RUN(switchover_overlong_target_ignored);
	RUN(switchover_json_round_trip);
	RUN(handover_json_round_trip);
	RUN(handover_without_lsn_ignored);
	RUN(damaged_steering_annotations_ignored);
	RUN(lease_edit_keeps_the_rest);
	RUN(lease_edit_minimal_lease);
	RUN(build_lease_steering_annotations);
}
