/*
 * kjson.c
 *		JSON for the Kubernetes objects hapg reads and writes.
 *
 * Everything coming from the API is untrusted: wrong types, missing fields,
 * overlong strings and garbage are reported through err/errlen and never
 * crash or overflow.  json-c allocates with malloc, so nothing here may
 * ereport(); the worker turns errors into log lines.
 */
#include "kjson.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Copy a string into a fixed buffer, refusing to truncate silently. */
static bool
copy_str(char *dst, size_t dstlen, const char *src)
{
	size_t		len = strlen(src);

	if (len >= dstlen)
	{
		dst[0] = '\0';
		return false;
	}
	memcpy(dst, src, len + 1);
	return true;
}

/*
 * A published host:port is pasted into a libpq connection string and the
 * rejoin note: nothing but host name, IP address and port characters.
 */
static bool
plain_address(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
			  (*s >= '0' && *s <= '9') || strchr(".-:[]%_", *s) != NULL))
			return false;
	return true;
}

/* Walk a path of object keys; NULL when any step is missing or not an object. */
static json_object *
jget(json_object *obj, const char *k1, const char *k2, const char *k3)
{
	const char *keys[3] = {k1, k2, k3};
	int			i;

	for (i = 0; i < 3 && keys[i]; i++)
	{
		json_object *next;

		if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
			!json_object_object_get_ex(obj, keys[i], &next))
			return NULL;
		obj = next;
	}
	return obj;
}

/* A string member or NULL (numbers are not silently turned into strings). */
static const char *
jstr(json_object *obj)
{
	if (obj == NULL || !json_object_is_type(obj, json_type_string))
		return NULL;
	return json_object_get_string(obj);
}

/* An integer member, with a default for absent or mistyped values. */
static int
jint(json_object *obj, int dflt)
{
	if (obj == NULL || !json_object_is_type(obj, json_type_int))
		return dflt;
	return (int) json_object_get_int64(obj);
}

/* Parse a whole buffer as one JSON value; trailing garbage is an error. */
bool
hapg_parse_json(const char *buf, size_t len, json_object **out,
				char *err, int errlen)
{
	json_tokener *tok;
	json_object *obj;
	enum json_tokener_error jerr;

	*out = NULL;
	if (len == 0)
	{
		snprintf(err, errlen, "empty response body");
		return false;
	}
	if (len > (size_t) INT32_MAX)
	{
		snprintf(err, errlen, "response body too large");
		return false;
	}
	tok = json_tokener_new();
	if (tok == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return false;
	}
	obj = json_tokener_parse_ex(tok, buf, (int) len);
	jerr = json_tokener_get_error(tok);
	if (obj != NULL && jerr == json_tokener_success)
	{
		size_t		off = json_tokener_get_parse_end(tok);

		while (off < len && (buf[off] == ' ' || buf[off] == '\n' ||
							 buf[off] == '\r' || buf[off] == '\t'))
			off++;
		if (off != len)
		{
			json_object_put(obj);
			obj = NULL;
			snprintf(err, errlen, "invalid JSON: trailing data at byte %zu", off);
		}
	}
	else
	{
		if (obj)
			json_object_put(obj);
		obj = NULL;
		snprintf(err, errlen, "invalid JSON: %s",
				 jerr == json_tokener_continue ? "truncated document"
				 : json_tokener_error_desc(jerr));
	}
	json_tokener_free(tok);
	if (obj != NULL && !json_object_is_type(obj, json_type_object))
	{
		json_object_put(obj);
		obj = NULL;
		snprintf(err, errlen, "invalid response: JSON value is not an object");
	}
	*out = obj;
	return obj != NULL;
}

const char *
hapg_object_rv(json_object *obj)
{
	return jstr(jget(obj, "metadata", "resourceVersion", NULL));
}

const char *
hapg_object_kind(json_object *obj)
{
	return jstr(jget(obj, "kind", NULL, NULL));
}

const char *
hapg_object_name(json_object *obj)
{
	return jstr(jget(obj, "metadata", "name", NULL));
}

/* The leader's replica positions: {"pg-1":{"lsn":"0/30","state":"streaming"}}. */
static void
parse_members(const char *text, HapgLeaseInfo *out)
{
	json_object *obj;
	char		err[64];
	struct json_object_iterator it;
	struct json_object_iterator end;

	if (!hapg_parse_json(text, strlen(text), &obj, err, sizeof(err)))
		return;
	it = json_object_iter_begin(obj);
	end = json_object_iter_end(obj);
	for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
	{
		json_object *val = json_object_iter_peek_value(&it);
		HapgMemberPos *p;
		const char *lsn;
		const char *state;

		if (out->npos >= HAPG_MAX_MEMBERS)
			break;
		p = &out->pos[out->npos];
		memset(p, 0, sizeof(*p));
		lsn = jstr(jget(val, "lsn", NULL, NULL));
		state = jstr(jget(val, "state", NULL, NULL));
		if (!copy_str(p->name, sizeof(p->name), json_object_iter_peek_name(&it)) ||
			lsn == NULL || !hapg_parse_lsn(lsn, &p->lsn))
			continue;
		if (state)
			copy_str(p->state, sizeof(p->state), state);
		out->npos++;
	}
	json_object_put(obj);
}

/* The history of leader changes: a JSON array of objects, newest last. */
static void
parse_history(const char *text, HapgLeaseInfo *out)
{
	json_tokener *tok = json_tokener_new();
	json_object *arr;
	size_t		i,
				n;

	if (tok == NULL)
		return;
	arr = json_tokener_parse_ex(tok, text, (int) strlen(text));
	json_tokener_free(tok);
	if (arr == NULL)
		return;
	if (!json_object_is_type(arr, json_type_array))
	{
		json_object_put(arr);
		return;
	}
	n = json_object_array_length(arr);
	/* keep the newest entries if there are too many */
	for (i = n > HAPG_MAX_HISTORY ? n - HAPG_MAX_HISTORY : 0; i < n; i++)
	{
		json_object *e = json_object_array_get_idx(arr, i);
		HapgHistoryEntry *h = &out->history[out->nhistory];
		const char *s;

		memset(h, 0, sizeof(*h));
		h->old_timeline = jint(jget(e, "old_timeline", NULL, NULL), 0);
		h->new_timeline = jint(jget(e, "new_timeline", NULL, NULL), 0);
		if ((s = jstr(jget(e, "lsn", NULL, NULL))))
			hapg_parse_lsn(s, &h->lsn);
		if ((s = jstr(jget(e, "reason", NULL, NULL))))
			snprintf(h->reason, sizeof(h->reason), "%s", s);
		if ((s = jstr(jget(e, "time", NULL, NULL))))
			copy_str(h->time, sizeof(h->time), s);
		if ((s = jstr(jget(e, "leader", NULL, NULL))))
			copy_str(h->leader, sizeof(h->leader), s);
		out->nhistory++;
	}
	json_object_put(arr);
}

/* A JSON annotation of the Lease as an object, or NULL (absent or damaged). */
static json_object *
json_annotation(json_object *obj, const char *key)
{
	const char *s = jstr(jget(obj, "metadata", "annotations", key));
	json_object *parsed;
	char		err[64];

	if (s == NULL || !hapg_parse_json(s, strlen(s), &parsed, err, sizeof(err)))
		return NULL;
	if (!json_object_is_type(parsed, json_type_object))
	{
		json_object_put(parsed);
		return NULL;
	}
	return parsed;
}

static int64_t
jint64(json_object *o)
{
	return o && (json_object_is_type(o, json_type_int) ||
				 json_object_is_type(o, json_type_double)) ? json_object_get_int64(o) : 0;
}

/*
 * The operators' annotations: pause, a pending switchover, a hand-over.  A
 * damaged one is ignored (as if absent), never fatal to the Lease.
 */
static void
parse_steering(json_object *obj, HapgLeaseInfo *out)
{
	json_object *a;
	const char *s;

	if ((a = json_annotation(obj, HAPG_CONFIG_ANNOTATION)))
	{
		json_object *p = jget(a, "paused", NULL, NULL);

		out->paused = p && json_object_is_type(p, json_type_boolean) &&
			json_object_get_boolean(p);
		json_object_put(a);
	}
	if ((a = json_annotation(obj, HAPG_SWITCHOVER_ANNOTATION)))
	{
		HapgSwitchover *sw = &out->switchover;

		s = jstr(jget(a, "from", NULL, NULL));
		if (s && copy_str(sw->from, sizeof(sw->from), s))
		{
			sw->pending = true;
			if ((s = jstr(jget(a, "to", NULL, NULL))) &&
				!copy_str(sw->to, sizeof(sw->to), s))
				sw->pending = false;	/* a damaged target: not ours to guess */
			if ((s = jstr(jget(a, "requested_by", NULL, NULL))))
				copy_str(sw->requested_by, sizeof(sw->requested_by), s);
			sw->scheduled_at_us = jint64(jget(a, "scheduled_at_us", NULL, NULL));
			sw->requested_at_us = jint64(jget(a, "requested_at_us", NULL, NULL));
		}
		json_object_put(a);
	}
	if ((a = json_annotation(obj, HAPG_HANDOVER_ANNOTATION)))
	{
		s = jstr(jget(a, "to", NULL, NULL));
		if (s && copy_str(out->handover_to, sizeof(out->handover_to), s))
		{
			out->has_handover = true;
			if ((s = jstr(jget(a, "from", NULL, NULL))))
				copy_str(out->handover_from, sizeof(out->handover_from), s);
			if ((s = jstr(jget(a, "reason", NULL, NULL))))
				copy_str(out->handover_reason, sizeof(out->handover_reason), s);
			if ((s = jstr(jget(a, "lsn", NULL, NULL))) == NULL ||
				!hapg_parse_lsn(s, &out->handover_lsn))
				out->has_handover = false;	/* no point to wait for: unusable */
		}
		json_object_put(a);
	}
}

/*
 * hapg.io/failsafe: {"members": [names]}.  Present but damaged, it still
 * says failsafe: it lists nobody, so nobody takes the Lease on its own
 * while its holder might rely on it.
 */
static void
parse_failsafe(json_object *obj, HapgLeaseInfo *out)
{
	json_object *a;
	json_object *list;
	size_t		i;

	if (jstr(jget(obj, "metadata", "annotations", HAPG_FAILSAFE_ANNOTATION)) == NULL)
		return;
	out->failsafe = true;
	if ((a = json_annotation(obj, HAPG_FAILSAFE_ANNOTATION)) == NULL)
		return;
	list = jget(a, "members", NULL, NULL);
	if (list && json_object_is_type(list, json_type_array))
		for (i = 0; i < json_object_array_length(list) && out->nfailsafe < HAPG_MAX_MEMBERS; i++)
		{
			const char *name = jstr(json_object_array_get_idx(list, i));

			if (name && hapg_valid_member_name(name) &&
				copy_str(out->failsafe_members[out->nfailsafe], HAPG_NAME_LEN, name))
				out->nfailsafe++;
		}
	json_object_put(a);
}

/*
 * hapg.io/sync: {"mode": "on", "strict": false, "k": 1, "members": [...]}.
 * Present but damaged, it promises nothing anyone can check: defined with
 * k 0 and nobody listed, so nobody takes over on its own.
 */
static void
parse_sync(json_object *obj, HapgLeaseInfo *out)
{
	json_object *a;
	json_object *list;
	json_object *k;
	const char *mode;
	size_t		i;

	hapg_sync_set_clear(&out->sync);
	if (jstr(jget(obj, "metadata", "annotations", HAPG_SYNC_ANNOTATION)) == NULL)
		return;
	out->sync.defined = true;
	if ((a = json_annotation(obj, HAPG_SYNC_ANNOTATION)) == NULL)
		return;
	list = jget(a, "members", NULL, NULL);
	k = jget(a, "k", NULL, NULL);
	if (list && json_object_is_type(list, json_type_array) &&
		k && json_object_is_type(k, json_type_int))
	{
		for (i = 0; i < json_object_array_length(list); i++)
		{
			const char *name = jstr(json_object_array_get_idx(list, i));

			if (name == NULL || strlen(name) >= HAPG_NAME_LEN ||
				!(hapg_valid_member_name(name) || hapg_sync_is_placeholder(name)) ||
				!hapg_sync_set_add(&out->sync, name))
			{
				/* one bad name and the whole list is suspect */
				hapg_sync_set_clear(&out->sync);
				out->sync.defined = true;
				json_object_put(a);
				return;
			}
		}
		out->sync.k = json_object_get_int(k);
		if (out->sync.k < 0 || out->sync.k > out->sync.n)
			out->sync.k = 0;
	}
	if ((mode = jstr(jget(a, "mode", NULL, NULL))) == NULL ||
		!hapg_sync_parse_mode(mode, &out->sync.mode))
		out->sync.mode = HAPG_SYNC_ON;
	{
		json_object *st = jget(a, "strict", NULL, NULL);

		out->sync.strict = st && json_object_is_type(st, json_type_boolean) &&
			json_object_get_boolean(st);
	}
	json_object_put(a);
}

/* Extract what the protocol needs from a coordination.k8s.io/v1 Lease. */
bool
hapg_parse_lease(json_object *obj, HapgLeaseInfo *out, char *err, int errlen)
{
	const char *kind = hapg_object_kind(obj);
	const char *rv = hapg_object_rv(obj);
	const char *holder;
	const char *s;
	json_object *spec;

	memset(out, 0, sizeof(*out));
	if (kind == NULL || strcmp(kind, "Lease") != 0)
	{
		snprintf(err, errlen, "expected a Lease, got kind \"%s\"", kind ? kind : "(none)");
		return false;
	}
	if (rv == NULL || !copy_str(out->view.resource_version,
								sizeof(out->view.resource_version), rv))
	{
		snprintf(err, errlen, "Lease without a valid metadata.resourceVersion");
		return false;
	}
	spec = jget(obj, "spec", NULL, NULL);
	holder = jstr(jget(spec, "holderIdentity", NULL, NULL));
	if (holder && !copy_str(out->view.holder, sizeof(out->view.holder), holder))
	{
		snprintf(err, errlen, "Lease holderIdentity is too long");
		return false;
	}
	/* the holder goes into logs, the rejoin note and the guard's verdict line */
	if (out->view.holder[0] && !hapg_valid_member_name(out->view.holder))
	{
		snprintf(err, errlen, "Lease holderIdentity is not a member name (lower-case letters, digits, '-' and '.')");
		out->view.holder[0] = '\0';
		return false;
	}
	if ((s = jstr(jget(spec, "renewTime", NULL, NULL))))
		copy_str(out->view.renew_time, sizeof(out->view.renew_time), s);
	out->view.duration_s = jint(jget(spec, "leaseDurationSeconds", NULL, NULL), 0);
	out->view.transitions = jint(jget(spec, "leaseTransitions", NULL, NULL), 0);
	out->view.known = true;
	out->view.exists = true;

	s = jstr(jget(obj, "metadata", "annotations", HAPG_LSN_ANNOTATION));
	if (s && hapg_parse_lsn(s, &out->leader_lsn))
		out->has_leader_lsn = true;
	s = jstr(jget(obj, "metadata", "annotations", HAPG_TIMELINE_ANNOTATION));
	if (s)
		out->leader_timeline = atoi(s);
	s = jstr(jget(obj, "metadata", "annotations", HAPG_MEMBERS_ANNOTATION));
	if (s)
		parse_members(s, out);
	s = jstr(jget(obj, "metadata", "annotations", HAPG_HISTORY_ANNOTATION));
	if (s)
		parse_history(s, out);
	parse_steering(obj, out);
	parse_failsafe(obj, out);
	parse_sync(obj, out);
	return true;
}

/* Extract a member's role label and its published status from its Pod. */
bool
hapg_parse_pod(json_object *obj, const char *role_label_key,
			   HapgPodInfo *out, char *err, int errlen)
{
	const char *name = hapg_object_name(obj);
	const char *rv = hapg_object_rv(obj);
	const char *s;
	json_object *st;

	memset(out, 0, sizeof(*out));
	if (name == NULL || !copy_str(out->name, sizeof(out->name), name))
	{
		snprintf(err, errlen, "Pod without a usable metadata.name");
		return false;
	}
	if (rv)
		copy_str(out->resource_version, sizeof(out->resource_version), rv);
	s = jstr(jget(obj, "metadata", "labels", role_label_key));
	if (s)
		copy_str(out->role_label, sizeof(out->role_label), s);
	out->deleting = jget(obj, "metadata", "deletionTimestamp", NULL) != NULL;

	s = jstr(jget(obj, "metadata", "annotations", HAPG_CANDIDACY_ANNOTATION));
	if (s && hapg_parse_json(s, strlen(s), &st, err, errlen))
	{
		const char *term = jstr(jget(st, "term", NULL, NULL));
		const char *lsn = jstr(jget(st, "lsn", NULL, NULL));
		json_object *el = jget(st, "eligible", NULL, NULL);

		if (term && lsn && copy_str(out->cand_term, sizeof(out->cand_term), term) &&
			hapg_parse_lsn(lsn, &out->cand_lsn))
		{
			out->has_candidacy = true;
			out->cand_eligible = el && json_object_is_type(el, json_type_boolean) &&
				json_object_get_boolean(el);
			out->cand_timeline = jint(jget(st, "timeline", NULL, NULL), 0);
			out->cand_priority = jint(jget(st, "priority", NULL, NULL), 0);
		}
		json_object_put(st);
	}

	s = jstr(jget(obj, "metadata", "annotations", HAPG_STATUS_ANNOTATION));
	if (s == NULL)
		return true;
	if (!hapg_parse_json(s, strlen(s), &st, err, errlen))
		return true;			/* a foreign or damaged annotation: no status */
	out->has_status = true;
	if ((s = jstr(jget(st, "role", NULL, NULL))))
		copy_str(out->role, sizeof(out->role), s);
	if ((s = jstr(jget(st, "state", NULL, NULL))))
		copy_str(out->state, sizeof(out->state), s);
	out->timeline = jint(jget(st, "timeline", NULL, NULL), 0);
	if ((s = jstr(jget(st, "lsn", NULL, NULL))))
		hapg_parse_lsn(s, &out->lsn);
	if ((s = jstr(jget(st, "connect_address", NULL, NULL))) && plain_address(s))
		copy_str(out->connect_address, sizeof(out->connect_address), s);
	if ((s = jstr(jget(st, "version", NULL, NULL))))
		copy_str(out->version, sizeof(out->version), s);
	{
		json_object *nf = jget(st, "nofailover", NULL, NULL);

		out->nofailover = nf && json_object_is_type(nf, json_type_boolean) &&
			json_object_get_boolean(nf);
		nf = jget(st, "nosync", NULL, NULL);
		out->nosync = nf && json_object_is_type(nf, json_type_boolean) &&
			json_object_get_boolean(nf);
	}
	out->priority = jint(jget(st, "priority", NULL, NULL), 1);
	json_object_put(st);
	return true;
}

/* Parse a PodList; returns the number of pods stored, or -1 on error. */
int
hapg_parse_pod_list(json_object *obj, const char *role_label_key,
					HapgPodInfo *pods, int max, char *list_rv, int rvlen,
					char *err, int errlen)
{
	json_object *items = jget(obj, "items", NULL, NULL);
	const char *rv = hapg_object_rv(obj);
	const char *kind = hapg_object_kind(obj);
	size_t		i,
				n;
	int			count = 0;

	if (kind == NULL || strcmp(kind, "PodList") != 0)
	{
		snprintf(err, errlen, "expected a PodList, got kind \"%s\"", kind ? kind : "(none)");
		return -1;
	}
	if (rv == NULL || !copy_str(list_rv, rvlen, rv))
	{
		snprintf(err, errlen, "PodList without a valid metadata.resourceVersion");
		return -1;
	}
	if (items == NULL || json_object_is_type(items, json_type_null))
		return 0;
	if (!json_object_is_type(items, json_type_array))
	{
		snprintf(err, errlen, "PodList items is not an array");
		return -1;
	}
	n = json_object_array_length(items);
	for (i = 0; i < n && count < max; i++)
	{
		char		perr[128];

		if (hapg_parse_pod(json_object_array_get_idx(items, i), role_label_key,
						   &pods[count], perr, sizeof(perr)))
			count++;
	}
	return count;
}

/* One line of a watch stream: {"type": "...", "object": {...}}. */
bool
hapg_parse_watch_event(const char *line, size_t len, char *type, int typelen,
					   json_object **obj, char *err, int errlen)
{
	json_object *ev;
	json_object *o;
	const char *t;

	*obj = NULL;
	if (!hapg_parse_json(line, len, &ev, err, errlen))
		return false;
	t = jstr(jget(ev, "type", NULL, NULL));
	o = jget(ev, "object", NULL, NULL);
	if (t == NULL || o == NULL || !json_object_is_type(o, json_type_object) ||
		!copy_str(type, typelen, t))
	{
		snprintf(err, errlen, "watch event without type or object");
		json_object_put(ev);
		return false;
	}
	*obj = json_object_get(o);
	json_object_put(ev);
	return true;
}

/* Turn an error body into "Reason: message" when it is a Status object. */
void
hapg_status_message(const char *body, size_t len, char *buf, int buflen)
{
	json_object *obj;
	char		err[64];
	const char *reason;
	const char *msg;

	buf[0] = '\0';
	if (body == NULL || len == 0 || len > 65536 ||
		!hapg_parse_json(body, len, &obj, err, sizeof(err)))
		return;
	reason = jstr(jget(obj, "reason", NULL, NULL));
	msg = jstr(jget(obj, "message", NULL, NULL));
	if (msg)
		snprintf(buf, buflen, "%s%s%s", reason ? reason : "", reason ? ": " : "", msg);
	json_object_put(obj);
}

/* Set obj[key] = string value, creating obj when needed. */
static void
set_str(json_object *obj, const char *key, const char *val)
{
	json_object_object_add(obj, key, json_object_new_string(val));
}

/* Return obj[key], replacing anything that is not an object with {}. */
static json_object *
ensure_obj(json_object *obj, const char *key)
{
	json_object *sub;

	if (json_object_object_get_ex(obj, key, &sub) &&
		json_object_is_type(sub, json_type_object))
		return sub;
	sub = json_object_new_object();
	json_object_object_add(obj, key, sub);
	return sub;
}

/* malloc'd copy of a JSON document's compact text. */
static char *
dump(json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
												   JSON_C_TO_STRING_NOSLASHESCAPE);
	char	   *copy = s ? strdup(s) : NULL;

	return copy;
}

/* Append one entry to the history annotation, keeping the newest ones. */
static void
append_history(json_object *ann, const HapgHistoryEntry *h)
{
	json_object *cur;
	json_object *arr = NULL;
	json_object *e = json_object_new_object();
	json_object *trimmed;
	char		buf[32];
	size_t		i,
				n;

	if (json_object_object_get_ex(ann, HAPG_HISTORY_ANNOTATION, &cur) &&
		json_object_is_type(cur, json_type_string))
	{
		arr = json_tokener_parse(json_object_get_string(cur));
		if (arr && !json_object_is_type(arr, json_type_array))
		{
			json_object_put(arr);
			arr = NULL;
		}
	}
	if (arr == NULL)
		arr = json_object_new_array();
	json_object_object_add(e, "old_timeline", json_object_new_int(h->old_timeline));
	json_object_object_add(e, "new_timeline", json_object_new_int(h->new_timeline));
	hapg_format_lsn(h->lsn, buf, sizeof(buf));
	set_str(e, "lsn", buf);
	set_str(e, "reason", h->reason);
	set_str(e, "time", h->time);
	set_str(e, "leader", h->leader);
	json_object_array_add(arr, e);

	n = json_object_array_length(arr);
	trimmed = json_object_new_array();
	for (i = n > HAPG_MAX_HISTORY ? n - HAPG_MAX_HISTORY : 0; i < n; i++)
		json_object_array_add(trimmed, json_object_get(json_object_array_get_idx(arr, i)));
	json_object_put(arr);
	set_str(ann, HAPG_HISTORY_ANNOTATION,
			json_object_to_json_string_ext(trimmed, JSON_C_TO_STRING_PLAIN |
										   JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(trimmed);
}

/* NULL keeps an annotation as read, "" removes it, anything else sets it. */
static void
set_annotation(json_object *ann, const char *key, const char *value)
{
	if (value == NULL)
		return;
	if (value[0] == '\0')
		json_object_object_del(ann, key);
	else
		set_str(ann, key, value);
}

/*
 * A member that does not hold the Lease edits only what its request is
 * about; the rest, renewTime included, stays as read.
 */
char *
hapg_build_lease_edit(json_object *existing, const HapgLeaseEdit *e)
{
	json_object *obj = NULL;
	json_object *meta;
	json_object *ann;
	char	   *out;

	if (existing == NULL || json_object_deep_copy(existing, &obj, NULL) != 0)
		return NULL;
	meta = ensure_obj(obj, "metadata");
	json_object_object_del(meta, "managedFields");
	set_str(meta, "resourceVersion", e->resource_version);
	ann = ensure_obj(meta, "annotations");
	set_annotation(ann, HAPG_CONFIG_ANNOTATION, e->config_json);
	set_annotation(ann, HAPG_SWITCHOVER_ANNOTATION, e->switchover_json);
	set_annotation(ann, HAPG_HANDOVER_ANNOTATION, e->handover_json);
	if (e->holder)
		set_str(ensure_obj(obj, "spec"), "holderIdentity", e->holder);
	out = dump(obj);
	json_object_put(obj);
	return out;
}

/* hapg.io/switchover: who asked for which switchover, and when it is due. */
char *
hapg_build_switchover_json(const HapgSwitchover *sw)
{
	json_object *obj = json_object_new_object();
	char	   *out;

	set_str(obj, "from", sw->from);
	set_str(obj, "to", sw->to);
	json_object_object_add(obj, "scheduled_at_us", json_object_new_int64(sw->scheduled_at_us));
	json_object_object_add(obj, "requested_at_us", json_object_new_int64(sw->requested_at_us));
	set_str(obj, "requested_by", sw->requested_by);
	out = dump(obj);
	json_object_put(obj);
	return out;
}

/* hapg.io/handover: the Lease is released to "to" once it has lsn. */
char *
hapg_build_handover_json(const char *from, const char *to, uint64_t lsn,
						 const char *reason)
{
	json_object *obj = json_object_new_object();
	char		buf[32];
	char	   *out;

	set_str(obj, "from", from);
	set_str(obj, "to", to);
	hapg_format_lsn(lsn, buf, sizeof(buf));
	set_str(obj, "lsn", buf);
	set_str(obj, "reason", reason);
	out = dump(obj);
	json_object_put(obj);
	return out;
}

/*
 * Build the Lease body for a create or a replace.  A replace starts from
 * the object as read, so labels and annotations others put there survive,
 * and it carries that read's resourceVersion: the compare-and-swap.
 */
char *
hapg_build_lease(json_object *existing, const HapgLeaseWrite *w)
{
	json_object *obj;
	json_object *meta;
	json_object *spec;
	json_object *ann;
	json_object *labels;
	char		lsn[32];
	char		tli[16];
	char	   *out;

	/* Work on a private copy so the cached read stays untouched. */
	obj = NULL;
	if (existing == NULL)
		obj = json_object_new_object();
	else if (json_object_deep_copy(existing, &obj, NULL) != 0)
		return NULL;
	set_str(obj, "apiVersion", "coordination.k8s.io/v1");
	set_str(obj, "kind", "Lease");
	meta = ensure_obj(obj, "metadata");
	set_str(meta, "name", w->name);
	set_str(meta, "namespace", w->namespace);
	json_object_object_del(meta, "managedFields");
	if (w->resource_version)
		set_str(meta, "resourceVersion", w->resource_version);
	else
		json_object_object_del(meta, "resourceVersion");
	labels = ensure_obj(meta, "labels");
	set_str(labels, HAPG_CLUSTER_LABEL, w->cluster);
	ann = ensure_obj(meta, "annotations");
	hapg_format_lsn(w->leader_lsn, lsn, sizeof(lsn));
	snprintf(tli, sizeof(tli), "%d", w->leader_timeline);
	set_str(ann, HAPG_LSN_ANNOTATION, lsn);
	set_str(ann, HAPG_TIMELINE_ANNOTATION, tli);
	if (w->members_json)
		set_str(ann, HAPG_MEMBERS_ANNOTATION, w->members_json);
	if (w->add_history)
		append_history(ann, w->add_history);
	set_annotation(ann, HAPG_CONFIG_ANNOTATION, w->config_json);
	set_annotation(ann, HAPG_SWITCHOVER_ANNOTATION, w->switchover_json);
	set_annotation(ann, HAPG_HANDOVER_ANNOTATION, w->handover_json);
	set_annotation(ann, HAPG_FAILSAFE_ANNOTATION, w->failsafe_json);
	set_annotation(ann, HAPG_SYNC_ANNOTATION, w->sync_json);

	spec = ensure_obj(obj, "spec");
	set_str(spec, "holderIdentity", w->holder);
	json_object_object_add(spec, "leaseDurationSeconds", json_object_new_int(w->duration_s));
	json_object_object_add(spec, "leaseTransitions", json_object_new_int(w->transitions));
	if (w->acquire_time)
		set_str(spec, "acquireTime", w->acquire_time);
	set_str(spec, "renewTime", w->renew_time);

	out = dump(obj);
	json_object_put(obj);
	return out;
}

/* The hapg.io/status annotation: what a user wants to see about a member. */
char *
hapg_build_status_json(const char *role, const char *state, int timeline,
					   uint64_t lsn, const char *connect_address,
					   const char *version, bool nofailover, bool nosync,
					   int priority)
{
	json_object *obj = json_object_new_object();
	char		buf[32];
	char	   *out;

	set_str(obj, "role", role);
	set_str(obj, "state", state);
	json_object_object_add(obj, "timeline", json_object_new_int(timeline));
	hapg_format_lsn(lsn, buf, sizeof(buf));
	set_str(obj, "lsn", buf);
	set_str(obj, "connect_address", connect_address);
	set_str(obj, "version", version);
	json_object_object_add(obj, "nofailover", json_object_new_boolean(nofailover));
	json_object_object_add(obj, "nosync", json_object_new_boolean(nosync));
	json_object_object_add(obj, "priority", json_object_new_int(priority));
	out = dump(obj);
	json_object_put(obj);
	return out;
}

/* A merge patch of the role label (NULL removes it) and the status (if any). */
char *
hapg_build_pod_patch(const char *role_label_key, const char *label_value,
					 const char *status_json)
{
	json_object *obj = json_object_new_object();
	json_object *meta = ensure_obj(obj, "metadata");
	json_object *labels = ensure_obj(meta, "labels");
	char	   *out;

	json_object_object_add(labels, role_label_key,
						   label_value ? json_object_new_string(label_value) : NULL);
	if (status_json)
		set_str(ensure_obj(meta, "annotations"), HAPG_STATUS_ANNOTATION, status_json);
	out = dump(obj);
	json_object_put(obj);
	return out;
}

/* A merge patch publishing this member's position for one election. */
char *
hapg_build_candidacy_patch(const char *term, bool eligible, uint64_t lsn,
						   int timeline, int priority)
{
	json_object *c = json_object_new_object();
	json_object *obj = json_object_new_object();
	json_object *ann = ensure_obj(ensure_obj(obj, "metadata"), "annotations");
	char		buf[32];
	char	   *out;

	set_str(c, "term", term);
	json_object_object_add(c, "eligible", json_object_new_boolean(eligible));
	hapg_format_lsn(lsn, buf, sizeof(buf));
	set_str(c, "lsn", buf);
	json_object_object_add(c, "timeline", json_object_new_int(timeline));
	json_object_object_add(c, "priority", json_object_new_int(priority));
	set_str(ann, HAPG_CANDIDACY_ANNOTATION,
			json_object_to_json_string_ext(c, JSON_C_TO_STRING_PLAIN |
										   JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(c);
	out = dump(obj);
	json_object_put(obj);
	return out;
}

char *
hapg_build_members_json(const HapgMemberPos *pos, int n)
{
	json_object *obj = json_object_new_object();
	char	   *out;
	int			i;

	for (i = 0; i < n; i++)
	{
		json_object *m = json_object_new_object();
		char		buf[32];

		hapg_format_lsn(pos[i].lsn, buf, sizeof(buf));
		set_str(m, "lsn", buf);
		set_str(m, "state", pos[i].state);
		json_object_object_add(obj, pos[i].name, m);
	}
	out = dump(obj);
	json_object_put(obj);
	return out;
}

/* The hapg.io/failsafe annotation: the members a failsafe leader waits for. */
char *
hapg_build_failsafe_json(const char (*names)[HAPG_NAME_LEN], int n)
{
	json_object *obj = json_object_new_object();
	json_object *list = json_object_new_array();
	char	   *out;
	int			i;

	for (i = 0; i < n; i++)
		json_object_array_add(list, json_object_new_string(names[i]));
	json_object_object_add(obj, "members", list);
	out = dump(obj);
	json_object_put(obj);
	return out;
}

/* The hapg.io/sync annotation: the synchronous set a leader published. */
char *
hapg_build_sync_json(const HapgSyncSet *set)
{
	json_object *obj = json_object_new_object();
	json_object *list = json_object_new_array();
	char	   *out;
	int			i;

	set_str(obj, "mode", hapg_sync_mode_name(set->mode));
	json_object_object_add(obj, "strict", json_object_new_boolean(set->strict));
	json_object_object_add(obj, "k", json_object_new_int(set->k));
	for (i = 0; i < set->n; i++)
		json_object_array_add(list, json_object_new_string(set->names[i]));
	json_object_object_add(obj, "members", list);
	out = dump(obj);
	json_object_put(obj);
	return out;
}

/* Kubernetes MicroTime: RFC 3339 in UTC with six fractional digits. */
void
hapg_format_microtime(int64_t unix_us, char *buf, int buflen)
{
	time_t		secs = (time_t) (unix_us / 1000000);
	struct tm	tm;

	gmtime_r(&secs, &tm);
	snprintf(buf, buflen, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (unix_us % 1000000));
}
