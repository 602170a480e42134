/* Unit tests of the HTTP endpoint's rules (httprules.c) and counters (metrics.c). */
#include <stdlib.h>

#include "unit.h"
#include "httprules.h"

/* A leader holding a valid Lease on timeline 2, with two replicas. */
static void
leader_view(HapgHttpView *v)
{
	memset(v, 0, sizeof(*v));
	v->published = v->configured = true;
	strcpy(v->cluster, "c1");
	strcpy(v->member, "pg-0");
	v->role = HAPG_ROLE_LEADER;
	strcpy(v->state, "running");
	strcpy(v->leader, "pg-0");
	v->timeline = 2;
	v->lsn = v->write_lsn = 0x3000000;
	v->leader_lsn = 0x3000000;
	v->lease_known = true;
	v->lease_left_s = 20;
	v->info_age_s = 1;
	v->worker_pid = 42;
	v->loop_count = 7;
	v->uptime_s = 100;
	v->loop_wait_s = 10;
	v->data_dir_ok = true;
	v->api_ok = true;
	v->failover_priority = 1;
	v->nmembers = 3;
	strcpy(v->members[0].name, "pg-0");
	v->members[0].is_leader = true;
	v->members[0].lsn = 0x3000000;
	strcpy(v->members[1].name, "pg-1");
	v->members[1].lsn = 0x2ff0000;
	strcpy(v->members[2].name, "pg-2");
	v->members[2].lsn = 0;		/* unknown */
}

/* A standby streaming from pg-0, 64 kB behind its last published position. */
static void
replica_view(HapgHttpView *v)
{
	leader_view(v);
	strcpy(v->member, "pg-1");
	v->role = HAPG_ROLE_REPLICA;
	strcpy(v->state, "streaming");
	v->in_recovery = v->streaming = true;
	v->lsn = v->receive_lsn = 0x3000000 - 65536;
	v->replay_lsn = v->lsn;
	v->write_lsn = 0;
}

TEST(endpoints_and_aliases)
{
	CHECK(hapg_http_endpoint("/primary") == HAPG_EP_PRIMARY);
	CHECK(hapg_http_endpoint("/leader") == HAPG_EP_PRIMARY);
	CHECK(hapg_http_endpoint("/master") == HAPG_EP_PRIMARY);
	CHECK(hapg_http_endpoint("/primary/") == HAPG_EP_PRIMARY);
	CHECK(hapg_http_endpoint("/replica") == HAPG_EP_REPLICA);
	CHECK(hapg_http_endpoint("/read-write") == HAPG_EP_READ_WRITE);
	CHECK(hapg_http_endpoint("/read-only") == HAPG_EP_READ_ONLY);
	CHECK(hapg_http_endpoint("/health") == HAPG_EP_HEALTH);
	CHECK(hapg_http_endpoint("/liveness") == HAPG_EP_LIVENESS);
	CHECK(hapg_http_endpoint("/readiness") == HAPG_EP_READINESS);
	CHECK(hapg_http_endpoint("/cluster") == HAPG_EP_CLUSTER);
	CHECK(hapg_http_endpoint("/history") == HAPG_EP_HISTORY);
	CHECK(hapg_http_endpoint("/metrics") == HAPG_EP_METRICS);
	CHECK(hapg_http_endpoint("/") == HAPG_EP_STATUS);
	CHECK(hapg_http_endpoint("/primaryx") == HAPG_EP_UNKNOWN);
	CHECK(hapg_http_endpoint("/prim") == HAPG_EP_UNKNOWN);
	CHECK(hapg_http_endpoint("/primary//") == HAPG_EP_UNKNOWN);
	CHECK(hapg_http_endpoint("") == HAPG_EP_UNKNOWN);
	CHECK(hapg_http_endpoint(NULL) == HAPG_EP_UNKNOWN);
}

TEST(lag_parsing)
{
	uint64_t	b = 0;

	CHECK(hapg_parse_lag("1048576", &b) && b == 1048576);
	CHECK(hapg_parse_lag("1MB", &b) && b == 1048576);
	CHECK(hapg_parse_lag("1mb", &b) && b == 1048576);
	CHECK(hapg_parse_lag("16kB", &b) && b == 16384);
	CHECK(hapg_parse_lag("2 GB", &b) && b == 2ULL << 30);
	CHECK(hapg_parse_lag("0", &b) && b == 0);
	CHECK(!hapg_parse_lag("", &b));
	CHECK(!hapg_parse_lag("-1", &b));
	CHECK(!hapg_parse_lag("1XB", &b));
	CHECK(!hapg_parse_lag("MB", &b));
	CHECK(!hapg_parse_lag("99999999999999999999TB", &b));
	CHECK(!hapg_parse_lag("20000000TB", &b));
}

TEST(primary_rule)
{
	HapgHttpView v;
	char		why[512];

	leader_view(&v);
	CHECK(hapg_is_primary(&v, why, sizeof(why)));
	CHECK(hapg_is_ready(&v, why, sizeof(why)));
	v.lease_left_s = 0;
	CHECK(!hapg_is_primary(&v, why, sizeof(why)));
	CHECK(strstr(why, "without a valid Lease") != NULL);
	CHECK(!hapg_is_ready(&v, why, sizeof(why)));
	/* failsafe mode keeps a leader past its Lease the primary */
	v.failsafe_active = true;
	CHECK(hapg_is_primary(&v, why, sizeof(why)));
	CHECK(strstr(why, "failsafe") != NULL);
	CHECK(hapg_is_ready(&v, why, sizeof(why)));
	v.role = HAPG_ROLE_UNLEASED_PRIMARY;
	CHECK(!hapg_is_primary(&v, why, sizeof(why)));
	leader_view(&v);
	v.read_only = true;
	CHECK(!hapg_is_primary(&v, why, sizeof(why)));
	leader_view(&v);
	v.role = HAPG_ROLE_UNLEASED_PRIMARY;
	CHECK(!hapg_is_primary(&v, why, sizeof(why)));
	leader_view(&v);
	v.lease_known = false;
	CHECK(!hapg_is_primary(&v, why, sizeof(why)));
	replica_view(&v);
	CHECK(!hapg_is_primary(&v, why, sizeof(why)));
}

TEST(replica_rule)
{
	HapgHttpView v;
	HapgHttpQuery q = {0};
	char		why[512];

	replica_view(&v);
	CHECK(hapg_is_replica(&v, NULL, why, sizeof(why)));
	CHECK(hapg_is_ready(&v, why, sizeof(why)));
	q.has_lag = true;
	q.max_lag = 65536;
	CHECK(hapg_is_replica(&v, &q, why, sizeof(why)));
	q.max_lag = 65535;
	CHECK(!hapg_is_replica(&v, &q, why, sizeof(why)));
	CHECK(strstr(why, "65536 bytes behind") != NULL);
	v.leader_lsn = 0;
	CHECK(!hapg_is_replica(&v, &q, why, sizeof(why)));
	CHECK(hapg_is_replica(&v, NULL, why, sizeof(why)));
	replica_view(&v);
	v.streaming = false;
	strcpy(v.state, "recovering");
	CHECK(!hapg_is_replica(&v, NULL, why, sizeof(why)));
	CHECK(!hapg_is_ready(&v, why, sizeof(why)));
	leader_view(&v);
	CHECK(!hapg_is_replica(&v, NULL, why, sizeof(why)));
}

TEST(liveness_rule)
{
	HapgHttpView v;
	char		why[512];

	leader_view(&v);
	CHECK(hapg_is_live(&v, NULL, why, sizeof(why)));
	v.info_age_s = 59;
	CHECK(hapg_is_live(&v, NULL, why, sizeof(why)));
	v.info_age_s = 61;
	CHECK(!hapg_is_live(&v, NULL, why, sizeof(why)));
	CHECK(strstr(why, "stalled") != NULL);
	v.loop_wait_s = 30;			/* limit 90 s */
	CHECK(hapg_is_live(&v, NULL, why, sizeof(why)));
	CHECK(hapg_stall_limit_s(30) == 90 && hapg_stall_limit_s(1) == 60);
	{
		HapgHttpQuery q = {0};
		double		sec = 0;

		CHECK(hapg_parse_seconds("2", &sec) && sec == 2);
		CHECK(hapg_parse_seconds("0.5", &sec) && sec == 0.5);
		CHECK(!hapg_parse_seconds("0", &sec) && !hapg_parse_seconds("2s", &sec) &&
			  !hapg_parse_seconds("-1", &sec) && !hapg_parse_seconds("1e9", &sec));
		v.info_age_s = 3;
		q.stall_s = 2;
		CHECK(!hapg_is_live(&v, &q, why, sizeof(why)));
		CHECK(strstr(why, "limit 2 s") != NULL);
		q.stall_s = 5;
		CHECK(hapg_is_live(&v, &q, why, sizeof(why)));
	}
	leader_view(&v);
	v.worker_pid = 0;
	v.info_age_s = -1;
	v.uptime_s = 10;
	CHECK(hapg_is_live(&v, NULL, why, sizeof(why)));
	v.uptime_s = 61;
	CHECK(!hapg_is_live(&v, NULL, why, sizeof(why)));
	leader_view(&v);
	v.data_dir_ok = false;
	CHECK(!hapg_is_live(&v, NULL, why, sizeof(why)));
	CHECK(!hapg_is_healthy(&v, why, sizeof(why)));
	/* a starting server is alive but not healthy */
	replica_view(&v);
	strcpy(v.state, "starting");
	v.streaming = false;
	CHECK(hapg_is_live(&v, NULL, why, sizeof(why)));
	CHECK(!hapg_is_healthy(&v, why, sizeof(why)));
	strcpy(v.state, "recovering");
	CHECK(hapg_is_healthy(&v, why, sizeof(why)));
}

TEST(answers)
{
	HapgHttpView v;
	HapgHttpQuery q = {0};
	HapgHttpAnswer a;

	leader_view(&v);
	hapg_http_answer(HAPG_EP_PRIMARY, &v, &q, false, &a);
	CHECK(a.status == 200);
	CHECK(strstr(a.body.data, "\"role\": \"leader\"") != NULL);
	CHECK(strstr(a.body.data, "\"timeline\": 2") != NULL);
	CHECK(strstr(a.body.data, "\"lsn\": \"0/3000000\"") != NULL);
	CHECK(strstr(a.body.data, "\"leader\": \"pg-0\"") != NULL);
	CHECK(strstr(a.body.data, "\"paused\": false") != NULL);
	CHECK(strstr(a.body.data, "\"lag\": 0") != NULL);
	free(a.body.data);
	hapg_http_answer(HAPG_EP_REPLICA, &v, &q, false, &a);
	CHECK(a.status == 503);
	free(a.body.data);
	hapg_http_answer(HAPG_EP_READ_ONLY, &v, &q, false, &a);
	CHECK(a.status == 200);
	free(a.body.data);
	hapg_http_answer(HAPG_EP_STATUS, &v, &q, false, &a);
	CHECK(a.status == 200);
	free(a.body.data);

	replica_view(&v);
	v.paused = true;
	hapg_http_answer(HAPG_EP_REPLICA, &v, &q, false, &a);
	CHECK(a.status == 200);
	CHECK(strstr(a.body.data, "\"lag\": 65536") != NULL);
	CHECK(strstr(a.body.data, "\"paused\": true") != NULL);
	free(a.body.data);
	hapg_http_answer(HAPG_EP_PRIMARY, &v, &q, false, &a);
	CHECK(a.status == 503);
	free(a.body.data);
	hapg_http_answer(HAPG_EP_READ_WRITE, &v, &q, false, &a);
	CHECK(a.status == 503);
	free(a.body.data);
	q.has_lag = true;
	q.bad_lag = true;
	hapg_http_answer(HAPG_EP_REPLICA, &v, &q, false, &a);
	CHECK(a.status == 400);
	free(a.body.data);
	hapg_http_answer(HAPG_EP_UNKNOWN, &v, &q, false, &a);
	CHECK(a.status == 404);
	free(a.body.data);

	hapg_http_answer(HAPG_EP_CLUSTER, &v, NULL, false, &a);
	CHECK(a.status == 200);
	CHECK(strstr(a.body.data, "\"member\": \"pg-2\"") != NULL);
	CHECK(strstr(a.body.data, "\"lag_bytes\": 65536") != NULL);
	CHECK(strstr(a.body.data, "\"lag_bytes\": null") != NULL);
	free(a.body.data);
	v.nhistory = 1;
	v.history[0].old_timeline = 1;
	v.history[0].new_timeline = 2;
	v.history[0].lsn = 0x3000060;
	strcpy(v.history[0].reason, "switchover \"x\"");
	strcpy(v.history[0].leader, "pg-0");
	hapg_http_answer(HAPG_EP_HISTORY, &v, NULL, false, &a);
	CHECK(strstr(a.body.data, "\"new_timeline\": 2, \"lsn\": \"0/3000060\"") != NULL);
	CHECK(strstr(a.body.data, "switchover \\\"x\\\"") != NULL);
	free(a.body.data);
}

/* What is not known is null, in the member's and the cluster's JSON alike. */
TEST(unknown_values_are_null)
{
	HapgHttpView v;
	HapgHttpQuery q = {0};
	HapgHttpAnswer a;

	replica_view(&v);
	v.timeline = 0;
	v.leader[0] = '\0';
	v.leader_lsn = 0;
	v.members[0].timeline = 0;
	hapg_http_answer(HAPG_EP_STATUS, &v, &q, false, &a);
	CHECK(strstr(a.body.data, "\"timeline\": null") != NULL);
	CHECK(strstr(a.body.data, "\"leader\": null") != NULL);
	free(a.body.data);
	hapg_http_answer(HAPG_EP_CLUSTER, &v, NULL, false, &a);
	CHECK(strstr(a.body.data, "{\"cluster\": \"c1\", \"leader\": null, ") != NULL);
	CHECK(strstr(a.body.data, "\"timeline\": null, \"lsn\": ") != NULL);
	free(a.body.data);
}

TEST(json_and_buffer)
{
	HapgBuf		b = {0};
	int			i;

	hapg_buf_json_string(&b, "a\"b\\c\nd\x01");
	CHECK_STR(b.data, "\"a\\\"b\\\\c\\nd\\u0001\"");
	free(b.data);
	memset(&b, 0, sizeof(b));
	for (i = 0; i < 10000; i++)
		hapg_buf_printf(&b, "%04d,", i % 10000);
	CHECK(!b.failed && b.len == 50000 && strncmp(b.data + 49995, "9999,", 5) == 0);
	free(b.data);
}

TEST(counters)
{
	HapgMetrics m;
	int			i;

	memset(&m, 0, sizeof(m));
	CHECK(hapg_api_verb("get") == HAPG_VERB_GET);
	CHECK(hapg_api_verb("PATCH") == HAPG_VERB_PATCH);
	CHECK(hapg_api_verb("BREW") == HAPG_VERB_OTHER);
	hapg_metrics_count_api(&m, HAPG_VERB_GET, 200, 0.003, 1000.5);
	hapg_metrics_count_api(&m, HAPG_VERB_GET, 200, 0.2, 1001.5);
	hapg_metrics_count_api(&m, HAPG_VERB_PUT, 409, 0.02, 1002.5);
	hapg_metrics_count_api(&m, HAPG_VERB_PUT, 0, 30, 1003.5);	/* time-out */
	CHECK(m.napi == 3);
	CHECK(m.api[0].n == 2 && m.api[1].code == 409 && m.api[2].code == 0);
	CHECK(m.last_api_success_unix == 1002.5);
	CHECK(m.api_seconds.count == 4);
	CHECK(m.api_seconds.buckets[0] == 1);	/* <= 0.005 */
	CHECK(m.api_seconds.buckets[5] == 1);	/* <= 0.25 */
	CHECK(m.api_seconds.buckets[hapg_api_seconds_nbounds] == 1);	/* +Inf */
	for (i = 0; i < 100; i++)
		hapg_metrics_count_api(&m, HAPG_VERB_GET, 100 + i, 0.001, 1);
	CHECK(m.napi == HAPG_API_CODES);
	CHECK(m.api_other_codes == (uint64_t) (100 - (HAPG_API_CODES - 3)));
}

TEST(metrics_text)
{
	HapgHttpView v;
	HapgBuf		b = {0};

	leader_view(&v);
	v.lease_transitions = 3;
	v.metrics.fencing_events = 2;
	hapg_metrics_count_api(&v.metrics, HAPG_VERB_PUT, 200, 0.03, 1700000000);
	hapg_histogram_observe(&v.metrics.loop_seconds, hapg_loop_seconds_bounds,
						   hapg_loop_seconds_nbounds, 0.02);
	hapg_render_metrics(&v, false, &b);
	CHECK(strstr(b.data, "# TYPE hapg_primary gauge\nhapg_primary{cluster=\"c1\",member=\"pg-0\"} 1\n") != NULL);
	CHECK(strstr(b.data, "hapg_replica{cluster=\"c1\",member=\"pg-0\"} 0\n") != NULL);
	CHECK(strstr(b.data, "hapg_timeline{cluster=\"c1\",member=\"pg-0\"} 2\n") != NULL);
	CHECK(strstr(b.data, "hapg_wal_written_position_bytes{cluster=\"c1\",member=\"pg-0\"} 50331648\n") != NULL);
	CHECK(strstr(b.data, "# TYPE hapg_fencing_events_total counter\nhapg_fencing_events_total{cluster=\"c1\",member=\"pg-0\"} 2\n") != NULL);
	CHECK(strstr(b.data, "hapg_lease_transitions_total{cluster=\"c1\",member=\"pg-0\"} 3\n") != NULL);
	CHECK(strstr(b.data, "hapg_api_requests_total{cluster=\"c1\",member=\"pg-0\",verb=\"PUT\",code=\"200\"} 1\n") != NULL);
	CHECK(strstr(b.data, "hapg_api_request_duration_seconds_bucket{cluster=\"c1\",member=\"pg-0\",le=\"0.025\"} 0\n") != NULL);
	CHECK(strstr(b.data, "hapg_api_request_duration_seconds_bucket{cluster=\"c1\",member=\"pg-0\",le=\"0.05\"} 1\n") != NULL);
	CHECK(strstr(b.data, "hapg_api_request_duration_seconds_bucket{cluster=\"c1\",member=\"pg-0\",le=\"+Inf\"} 1\n") != NULL);
	CHECK(strstr(b.data, "hapg_loop_duration_seconds_count{cluster=\"c1\",member=\"pg-0\"} 1\n") != NULL);
	CHECK(strstr(b.data, "hapg_replication_lag_bytes{cluster=\"c1\",member=\"pg-0\",replica=\"pg-1\"} 65536\n") != NULL);
	CHECK(strstr(b.data, "replica=\"pg-2\"") == NULL);	/* position unknown */
	CHECK(strstr(b.data, "replica=\"pg-0\"") == NULL);	/* the leader itself */
	CHECK(strstr(b.data, "hapg_api_last_success_timestamp_seconds{cluster=\"c1\",member=\"pg-0\"} 1700000000\n") != NULL);
	CHECK(strstr(b.data, "# EOF") == NULL);
	free(b.data);

	memset(&b, 0, sizeof(b));
	hapg_render_metrics(&v, true, &b);
	CHECK(strstr(b.data, "# TYPE hapg_fencing_events counter\nhapg_fencing_events_total{") != NULL);
	CHECK(b.len > 6 && strcmp(b.data + b.len - 6, "# EOF\n") == 0);
	free(b.data);
	CHECK(hapg_http_wants_openmetrics("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"));
	CHECK(!hapg_http_wants_openmetrics("text/plain"));
	CHECK(!hapg_http_wants_openmetrics(NULL));

	/* label values are escaped */
	strcpy(v.cluster, "a\"b\\c");
	memset(&b, 0, sizeof(b));
	hapg_render_metrics(&v, false, &b);
	CHECK(strstr(b.data, "hapg_primary{cluster=\"a\\\"b\\\\c\",member=\"pg-0\"} 1\n") != NULL);
	free(b.data);
}

TEST(elections)
{
	bool		standing = false;

	/* term "7": the expired Lease this member stood against */
	CHECK(hapg_election_settled(&standing, "7", "9", "pg-1", "pg-1") == 0);	/* not standing */
	standing = true;
	CHECK(hapg_election_settled(&standing, "7", "9", "", "pg-1") == 0 && standing);	/* unsettled */
	CHECK(hapg_election_settled(&standing, "7", "9", NULL, "pg-1") == 0 && standing);
	/* the expired Lease still names the old leader: nothing settled yet */
	CHECK(hapg_election_settled(&standing, "7", "7", "pg-0", "pg-1") == 0 && standing);
	CHECK(hapg_election_settled(&standing, "7", "9", "pg-1", "pg-1") == 1 && !standing);
	CHECK(hapg_election_settled(&standing, "7", "9", "pg-1", "pg-1") == 0);	/* counted once */
	standing = true;
	CHECK(hapg_election_settled(&standing, "7", "9", "pg-2", "pg-1") == -1 && !standing);
	/* the old leader back at the head of a new term: lost */
	standing = true;
	CHECK(hapg_election_settled(&standing, "7", "10", "pg-0", "pg-1") == -1 && !standing);
}

void
run_http_tests(void)
{
	RUN(endpoints_and_aliases);
	RUN(lag_parsing);
	RUN(primary_rule);
	RUN(replica_rule);
	RUN(liveness_rule);
	RUN(answers);
	RUN(unknown_values_are_null);
	RUN(json_and_buffer);
	RUN(counters);
	RUN(metrics_text);
	RUN(elections);
}
