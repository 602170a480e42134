/*
 * metrics.c
 *		Pure updates of hapg's counters and histograms (see metrics.h).
 *
 * The shared-memory copy and its lock are in http.c; these functions only
 * change the struct they are given.
 */
#include "metrics.h"

#include <string.h>
#include <strings.h>

const double hapg_api_seconds_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const int	hapg_api_seconds_nbounds = sizeof(hapg_api_seconds_bounds) / sizeof(double);
const double hapg_loop_seconds_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
const int	hapg_loop_seconds_nbounds = sizeof(hapg_loop_seconds_bounds) / sizeof(double);

static const char *const verb_names[HAPG_VERB_COUNT] = {
	"GET", "PUT", "POST", "PATCH", "DELETE", "OTHER"
};

/* The verb label of an HTTP method, as Kubernetes clients count them. */
HapgApiVerb
hapg_api_verb(const char *method)
{
	int			i;

	for (i = 0; method && i < HAPG_VERB_OTHER; i++)
		if (strcasecmp(method, verb_names[i]) == 0)
			return (HapgApiVerb) i;
	return HAPG_VERB_OTHER;
}

/* The label text of a verb. */
const char *
hapg_api_verb_name(HapgApiVerb verb)
{
	return verb < HAPG_VERB_COUNT ? verb_names[verb] : "OTHER";
}

/* Count one observation into the first bucket whose bound holds it (or +Inf). */
void
hapg_histogram_observe(HapgHistogram *h, const double *bounds, int nbounds,
					   double value)
{
	int			i;

	if (value < 0 || value != value)
		value = 0;
	for (i = 0; i < nbounds && i < HAPG_HIST_MAX_BUCKETS - 1; i++)
		if (value <= bounds[i])
			break;
	h->buckets[i]++;
	h->count++;
	h->sum += value;
}

/*
 * An event on a watch is an answer from the API too: a standby that only
 * watches (the leader's renewals arrive as events) may send no request for
 * many loops while the API is perfectly healthy.
 */
void
hapg_metrics_note_answer(HapgMetrics *m, double now_unix)
{
	m->last_api_success_unix = now_unix;
}

/*
 * One Kubernetes API request: its (verb, status) counter, the duration
 * histogram, and the time of the last answer that was not an error.
 */
void
hapg_metrics_count_api(HapgMetrics *m, HapgApiVerb verb, long code,
					   double seconds, double now_unix)
{
	int			i;

	if (code < 0 || code > 999)
		code = 0;
	if (verb >= HAPG_VERB_COUNT)
		verb = HAPG_VERB_OTHER;
	for (i = 0; i < m->napi; i++)
		if (m->api[i].verb == verb && m->api[i].code == code)
			break;
	if (i < m->napi)
		m->api[i].n++;
	else if (m->napi < HAPG_API_CODES)
	{
		m->api[m->napi].verb = (uint8_t) verb;
		m->api[m->napi].code = (int16_t) code;
		m->api[m->napi].n = 1;
		m->napi++;
	}
	else
		m->api_other_codes++;
	hapg_histogram_observe(&m->api_seconds, hapg_api_seconds_bounds,
						   hapg_api_seconds_nbounds, seconds);
	if (code >= 200 && code < 500)
		hapg_metrics_note_answer(m, now_unix);
}

/*
 * An election this member stands in (it published a candidacy for the
 * expired Lease whose resourceVersion is term) is settled once the Lease has
 * moved on and names a holder: 1 if it is this member (won), -1 if another
 * (lost), 0 while unsettled or when not standing.  The expired Lease still
 * names its old holder, so a holder alone settles nothing.  Clears *standing
 * once settled, so each election counts once.
 */
int
hapg_election_settled(bool *standing, const char *term, const char *rv,
					  const char *holder, const char *me)
{
	if (!*standing || holder == NULL || holder[0] == '\0' ||
		rv == NULL || (term != NULL && strcmp(rv, term) == 0))
		return 0;
	*standing = false;
	return strcmp(holder, me) == 0 ? 1 : -1;
}
