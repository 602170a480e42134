/*
 * kube.c
 *		The Kubernetes API client.
 *
 * All state lives in a KubeClient (kube.h) that the caller owns.  One
 * libcurl easy handle per client serves every plain request, so the TCP and
 * TLS connection is kept alive between requests.  Watches each get their own
 * easy handle on one multi handle, pumped without blocking by the worker's
 * wait loop.  Every plain request carries a total deadline derived from
 * hapg.retry_timeout, so a hung API server cannot stall the loop.
 *
 * Nothing here may ereport(ERROR): libcurl callbacks must not be
 * longjmp'd through.  Buffers are malloc'd and capped at HAPG_MAX_RESPONSE.
 */
#include "hapg.h"
#include "kube.h"
#include "http.h"
#include "watchframe.h"

#include <sys/select.h>

#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#define TOKEN_REREAD_MS (60 * 1000)

typedef struct Buffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		too_large;
} Buffer;

struct KubeWatch
{
	char		what[32];
	CURL	   *easy;
	struct curl_slist *headers;
	Buffer		buf;
	bool		active;
	KubeEventFn fn;
	void	   *arg;
	char		error[HAPG_MSG_LEN];
	long		status;
	bool		started;		/* opened at least once: a new start is a reconnect */
	KubeClient *client;			/* whose connection settings and multi handle */
};

/*
 * libcurl must be initialised before any handle exists; it counts repeated
 * calls itself, so every process may call this once more without harm.
 */
void
kube_global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* A client with no connection, no token read yet and no watches. */
void
kube_client_init(KubeClient *kc)
{
	memset(kc, 0, sizeof(*kc));
	kc->req_timeout_ms = 5000;
}

/*
 * Close what a short-lived owner opened; its watches must have been
 * stopped (only the worker has any, and it keeps them to the end).
 */
void
kube_client_close(KubeClient *kc)
{
	if (kc->req_easy)
		curl_easy_cleanup(kc->req_easy);
	if (kc->watch_multi)
		curl_multi_cleanup(kc->watch_multi);
	kc->req_easy = NULL;
	kc->watch_multi = NULL;
	kc->nwatches = 0;
}

/*
 * In a forked child: the connections belong to the parent, whose requests
 * must not get mixed with ours on the same socket.  Abandon them (without
 * closing anything the parent still uses) so the next request opens anew.
 */
void
kube_forget_connections(KubeClient *kc)
{
	kc->req_easy = NULL;
	kc->watch_multi = NULL;
	kc->nwatches = 0;
}

/* Called after every reload; a changed endpoint drops kept-alive connections. */
void
kube_configure(KubeClient *kc, const char *url, const char *token_file,
			   const char *ca_file, int timeout_ms)
{
	size_t		len;

	if (strcmp(kc->base_url, url) != 0 || strcmp(kc->ca_path, ca_file) != 0)
	{
		if (kc->req_easy)
		{
			curl_easy_cleanup(kc->req_easy);
			kc->req_easy = NULL;
		}
	}
	strlcpy(kc->base_url, url, sizeof(kc->base_url));
	len = strlen(kc->base_url);
	while (len > 0 && kc->base_url[len - 1] == '/')
		kc->base_url[--len] = '\0';
	if (strcmp(kc->token_path, token_file) != 0)
		kc->token_loaded = false;
	strlcpy(kc->token_path, token_file, sizeof(kc->token_path));
	strlcpy(kc->ca_path, ca_file, sizeof(kc->ca_path));
	kc->req_timeout_ms = timeout_ms;
}

/*
 * A leader's requests must all end before its fence deadline, whatever
 * their own timeout: 0 lifts the bound.
 */
void
kube_set_deadline(KubeClient *kc, int64 deadline_ms)
{
	kc->req_deadline_ms = deadline_ms;
}

/*
 * Bound service-account tokens rotate: re-read the file when it changed on
 * disk, at least every minute, and whenever the server said 401.
 */
static const char *
current_token(KubeClient *kc, bool force)
{
	struct stat st;
	int64		now = hapg_mono_ms();
	FILE	   *f;
	size_t		n;

	if (kc->token_path[0] == '\0')
		return NULL;
	if (stat(kc->token_path, &st) != 0)
	{
		if (!kc->token_loaded)
			return NULL;
		return kc->token;			/* keep using what we had; the file may come back */
	}
	if (kc->token_loaded && !force &&
		st.st_mtime == kc->token_stat.st_mtime && st.st_size == kc->token_stat.st_size &&
		st.st_ino == kc->token_stat.st_ino &&
		now - kc->token_read_ms < TOKEN_REREAD_MS)
		return kc->token;

	f = fopen(kc->token_path, "r");
	if (f == NULL)
		return kc->token_loaded ? kc->token : NULL;
	n = fread(kc->token, 1, sizeof(kc->token) - 1, f);
	fclose(f);
	while (n > 0 && (kc->token[n - 1] == '\n' || kc->token[n - 1] == '\r' ||
					 kc->token[n - 1] == ' '))
		n--;
	kc->token[n] = '\0';
	if (kc->token_loaded && (st.st_ino != kc->token_stat.st_ino ||
						 st.st_mtime != kc->token_stat.st_mtime))
		elog(DEBUG1, "hapg: re-read token file \"%s\"", kc->token_path);
	kc->token_stat = st;
	kc->token_read_ms = now;
	kc->token_loaded = true;
	return kc->token;
}

/* Append to a capped buffer; returning 0 makes libcurl abort the transfer. */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Buffer	   *b = (Buffer *) userdata;
	size_t		n = size * nmemb;

	if (b->len + n > HAPG_MAX_RESPONSE)
	{
		b->too_large = true;
		return 0;
	}
	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 16384;
		char	   *data;

		while (cap < b->len + n + 1)
			cap *= 2;
		data = realloc(b->data, cap);
		if (data == NULL)
		{
			b->too_large = true;
			return 0;
		}
		b->data = data;
		b->cap = cap;
	}
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* Let SIGTERM interrupt a slow request instead of waiting out its deadline. */
static int
progress_cb(void *clientp pg_attribute_unused(), curl_off_t dltotal pg_attribute_unused(),
			curl_off_t dlnow pg_attribute_unused(), curl_off_t ultotal pg_attribute_unused(),
			curl_off_t ulnow pg_attribute_unused())
{
	return (ProcDiePending || ShutdownRequestPending) ? 1 : 0;
}

/* Options shared by plain requests and watches. */
static struct curl_slist *
setup_common(KubeClient *kc, CURL *easy, const char *url, Buffer *buf,
			 bool force_token)
{
	struct curl_slist *headers = NULL;
	const char *tok = current_token(kc, force_token);

	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, buf);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, progress_cb);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	if (kc->ca_path[0] != '\0')
		curl_easy_setopt(easy, CURLOPT_CAINFO, kc->ca_path);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "hapg/" HAPG_VERSION);
	headers = curl_slist_append(headers, "Accept: application/json");
	if (tok && tok[0])
	{
		char		hdr[sizeof(kc->token) + 32];

		snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", tok);
		headers = curl_slist_append(headers, hdr);
	}
	return headers;
}

/* Describe a transport failure the way an operator wants to read it. */
static void
transport_error(KubeClient *kc, KubeResponse *resp, CURLcode rc, Buffer *buf, const char *method,
				const char *path, const char *errbuf)
{
	if (buf->too_large)
		snprintf(resp->error, sizeof(resp->error),
				 "%s %s: response larger than %d bytes, discarded",
				 method, path, HAPG_MAX_RESPONSE);
	else if (rc == CURLE_OPERATION_TIMEDOUT)
		snprintf(resp->error, sizeof(resp->error),
				 "%s %s: no answer in time (%d ms)", method, path, kc->req_timeout_ms);
	else
		snprintf(resp->error, sizeof(resp->error), "%s %s: %s", method, path,
				 errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

/* One request/response, with a 401 retried once after re-reading the token. */
bool
kube_request(KubeClient *kc, const char *method, const char *path, const char *content_type,
			 const char *body, KubeResponse *resp)
{
	char		url[2048];
	int			attempt;

	memset(resp, 0, sizeof(*resp));
	if (kc->base_url[0] == '\0')
	{
		snprintf(resp->error, sizeof(resp->error), "no Kubernetes API URL configured");
		return false;
	}
	snprintf(url, sizeof(url), "%s%s", kc->base_url, path);

	for (attempt = 0; attempt < 2; attempt++)
	{
		Buffer		buf = {0};
		struct curl_slist *headers;
		char		errbuf[CURL_ERROR_SIZE] = "";
		CURLcode	rc;
		int64		start = hapg_mono_ms();
		long		timeout = kc->req_timeout_ms;

		if (kc->req_deadline_ms > 0)
		{
			if (kc->req_deadline_ms - start < 20)
			{
				snprintf(resp->error, sizeof(resp->error),
						 "%s %s: not sent, the fence deadline has passed", method, path);
				return false;
			}
			timeout = Min(timeout, (long) (kc->req_deadline_ms - start));
		}

		if (kc->req_easy == NULL)
			kc->req_easy = curl_easy_init();
		else
			curl_easy_reset(kc->req_easy);	/* keeps the connection cache */
		if (kc->req_easy == NULL)
		{
			snprintf(resp->error, sizeof(resp->error), "could not initialise libcurl");
			return false;
		}
		headers = setup_common(kc, kc->req_easy, url, &buf, attempt > 0);
		if (content_type)
		{
			char		hdr[128];

			snprintf(hdr, sizeof(hdr), "Content-Type: %s", content_type);
			headers = curl_slist_append(headers, hdr);
		}
		curl_easy_setopt(kc->req_easy, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(kc->req_easy, CURLOPT_CUSTOMREQUEST, method);
		if (body)
		{
			curl_easy_setopt(kc->req_easy, CURLOPT_POSTFIELDS, body);
			curl_easy_setopt(kc->req_easy, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
		}
		else if (strcmp(method, "GET") == 0)
			curl_easy_setopt(kc->req_easy, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(kc->req_easy, CURLOPT_TIMEOUT_MS, timeout);
		curl_easy_setopt(kc->req_easy, CURLOPT_CONNECTTIMEOUT_MS, timeout);
		curl_easy_setopt(kc->req_easy, CURLOPT_ERRORBUFFER, errbuf);

		rc = curl_easy_perform(kc->req_easy);
		curl_easy_setopt(kc->req_easy, CURLOPT_ERRORBUFFER, NULL);
		curl_slist_free_all(headers);
		resp->seconds = (hapg_mono_ms() - start) / 1000.0;
		if (rc == CURLE_OK)
			curl_easy_getinfo(kc->req_easy, CURLINFO_RESPONSE_CODE, &resp->status);
		hapg_metrics_api_request(method, rc == CURLE_OK ? resp->status : 0, resp->seconds);

		kc->last_status = rc == CURLE_OK ? resp->status : 0;
		if (rc != CURLE_OK)
		{
			transport_error(kc, resp, rc, &buf, method, path, errbuf);
			free(buf.data);
			/* a broken kept-alive connection must not poison the next call */
			curl_easy_cleanup(kc->req_easy);
			kc->req_easy = NULL;
			return false;
		}
		curl_easy_getinfo(kc->req_easy, CURLINFO_RESPONSE_CODE, &resp->status);
		resp->body = buf.data;
		resp->len = buf.len;
		if (resp->status == 401 && attempt == 0 && kc->token_path[0] != '\0')
		{
			kube_response_free(resp);
			continue;			/* the token may have rotated under us */
		}
		if (resp->status >= 400)
		{
			char		msg[HAPG_MSG_LEN];

			hapg_status_message(resp->body, resp->len, msg, sizeof(msg));
			snprintf(resp->error, sizeof(resp->error), "%s %s: HTTP %ld%s%s",
					 method, path, resp->status, msg[0] ? " " : "", msg);
		}
		return true;
	}
	return true;
}

void
kube_response_free(KubeResponse *resp)
{
	free(resp->body);
	resp->body = NULL;
	resp->len = 0;
}

/* URL-escape a query value; result is palloc'd. */
char *
kube_escape(const char *s)
{
	char	   *e = curl_easy_escape(NULL, s, 0);
	char	   *r = pstrdup(e ? e : "");

	curl_free(e);
	return r;
}

/* A watch lives for the worker's lifetime; start/stop reuse it. */
KubeWatch *
kube_watch_create(KubeClient *kc, const char *what, KubeEventFn fn, void *arg)
{
	KubeWatch  *w;

	if (kc->nwatches >= KUBE_MAX_WATCHES)
		elog(ERROR, "hapg: too many watches");
	w = MemoryContextAllocZero(TopMemoryContext, sizeof(KubeWatch));
	strlcpy(w->what, what, sizeof(w->what));
	w->fn = fn;
	w->arg = arg;
	w->client = kc;
	kc->watches[kc->nwatches++] = w;
	return w;
}

/*
 * Open a watch stream.  Its deadline is the server-side timeout plus slack;
 * liveness of the lease protocol never depends on a watch.
 */
bool
kube_watch_start(KubeWatch *w, const char *path, int timeout_s)
{
	KubeClient *kc = w->client;
	char		url[2048];

	kube_watch_stop(w);
	if (w->started)
		hapg_metrics_event(HAPG_EV_WATCH_RECONNECT);
	w->started = true;
	if (kc->watch_multi == NULL)
		kc->watch_multi = curl_multi_init();
	w->easy = curl_easy_init();
	if (kc->watch_multi == NULL || w->easy == NULL)
	{
		snprintf(w->error, sizeof(w->error), "could not initialise libcurl");
		return false;
	}
	snprintf(url, sizeof(url), "%s%s", kc->base_url, path);
	w->headers = setup_common(kc, w->easy, url, &w->buf, false);
	curl_easy_setopt(w->easy, CURLOPT_HTTPHEADER, w->headers);
	curl_easy_setopt(w->easy, CURLOPT_TIMEOUT_MS, (long) (timeout_s + 10) * 1000L);
	curl_easy_setopt(w->easy, CURLOPT_CONNECTTIMEOUT_MS, (long) kc->req_timeout_ms);
	curl_easy_setopt(w->easy, CURLOPT_PRIVATE, w);
	curl_multi_add_handle(kc->watch_multi, w->easy);
	w->active = true;
	w->error[0] = '\0';
	w->status = 0;
	return true;
}

void
kube_watch_stop(KubeWatch *w)
{
	KubeClient *kc = w->client;

	if (w->easy)
	{
		curl_multi_remove_handle(kc->watch_multi, w->easy);
		curl_easy_cleanup(w->easy);
		w->easy = NULL;
	}
	if (w->headers)
	{
		curl_slist_free_all(w->headers);
		w->headers = NULL;
	}
	free(w->buf.data);
	memset(&w->buf, 0, sizeof(w->buf));
	w->active = false;
}

bool
kube_watch_active(KubeWatch *w)
{
	return w->active;
}

const char *
kube_watch_error(KubeWatch *w)
{
	return w->error;
}

/* The caller acted on a watch's error (re-reads what it covered): forget it. */
void
kube_watch_clear_error(KubeWatch *w)
{
	w->error[0] = '\0';
}

/* One complete line of a watch stream: parse it and hand it on, or log it. */
static void
watch_line(void *arg, const char *line, size_t len)
{
	KubeWatch  *w = (KubeWatch *) arg;
	char		type[32];
	char		err[HAPG_MSG_LEN];
	json_object *obj;

	if (hapg_parse_watch_event(line, len, type, sizeof(type), &obj, err, sizeof(err)))
	{
		hapg_metrics_watch_event();
		w->fn(w->arg, type, obj);
		json_object_put(obj);
	}
	else
		elog(LOG, "hapg: ignoring bad event on the %s watch: %s", w->what, err);
}

/* Hand every complete line in a watch's buffer to its callback. */
static int
drain_lines(KubeWatch *w)
{
	return hapg_watch_drain(w->buf.data, &w->buf.len, watch_line, w);
}

/* Move watch data along without blocking; returns events delivered. */
int
kube_watch_pump(KubeClient *kc)
{
	int			running;
	int			events = 0;
	int			i;
	CURLMsg    *msg;
	int			left;

	if (kc->watch_multi == NULL)
		return 0;
	curl_multi_perform(kc->watch_multi, &running);
	for (i = 0; i < kc->nwatches; i++)
		if (kc->watches[i]->active)
			events += drain_lines(kc->watches[i]);

	while ((msg = curl_multi_info_read(kc->watch_multi, &left)) != NULL)
	{
		KubeWatch  *w = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &w);
		if (w == NULL)
			continue;
		curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &w->status);
		if (msg->data.result != CURLE_OK)
			snprintf(w->error, sizeof(w->error), "%s watch ended: %s", w->what,
					 w->buf.too_large ? "event too large" :
					 curl_easy_strerror(msg->data.result));
		else if (w->status != 200)
			snprintf(w->error, sizeof(w->error), "%s watch refused: HTTP %ld",
					 w->what, w->status);
		else
			w->error[0] = '\0';
		if (w->status == 200)
			events += drain_lines(w);
		kube_watch_stop(w);
	}
	return events;
}

/* The sockets the watches wait on, for the worker's WaitEventSet. */
int
kube_watch_sockets(KubeClient *kc, int *fds, int *events, int max)
{
	fd_set		r,
				wr,
				ex;
	int			maxfd = -1;
	int			n = 0;
	int			fd;

	if (kc->watch_multi == NULL)
		return 0;
	FD_ZERO(&r);
	FD_ZERO(&wr);
	FD_ZERO(&ex);
	if (curl_multi_fdset(kc->watch_multi, &r, &wr, &ex, &maxfd) != CURLM_OK)
		return 0;
	for (fd = 0; fd <= maxfd && n < max; fd++)
	{
		int			ev = 0;

		if (FD_ISSET(fd, &r))
			ev |= WL_SOCKET_READABLE;
		if (FD_ISSET(fd, &wr))
			ev |= WL_SOCKET_WRITEABLE;
		if (ev)
		{
			fds[n] = fd;
			events[n] = ev;
			n++;
		}
	}
	return n;
}

/* How soon libcurl wants to be called again for the watches; -1 = no wish. */
long
kube_watch_timeout_ms(KubeClient *kc)
{
	long		t = -1;

	if (kc->watch_multi)
		curl_multi_timeout(kc->watch_multi, &t);
	return t;
}
