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
												"10.0.0.2:5432", "1.0", true, 7);
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

void
run_kjson_tests(void)
{
	RUN(lease_is_parsed);
	RUN(lease_errors);
	RUN(overlong_holder_rejected);
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
}
