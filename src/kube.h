/*
 * kube.h
 *		The Kubernetes API client: one kept-alive connection for requests,
 *		separate streams for watches.  Every request has a deadline.
 */
#ifndef HAPG_KUBE_H
#define HAPG_KUBE_H

#include "hapg.h"
#include "kjson.h"

#include <sys/stat.h>
#include <curl/curl.h>

#define KUBE_MAX_WATCHES 4

typedef struct KubeResponse
{
	long		status;			/* HTTP status; 0 when no answer arrived */
	char	   *body;			/* malloc'd, NUL-terminated; may be NULL */
	size_t		len;
	char		error[HAPG_MSG_LEN];	/* set when the call failed */
	double		seconds;		/* how long the call took */
} KubeResponse;

typedef struct KubeWatch KubeWatch;
typedef void (*KubeEventFn) (void *arg, const char *type, json_object *obj);

/*
 * One API client: its settings, its kept-alive connection, its token and
 * its watches.  Whoever talks to the API owns one (the worker in its
 * HapgWorker, the start-up guard and the hand-over process their own) and
 * must not move it once a watch was created on it.  Set up with
 * kube_client_init; the fields are kube.c's alone.
 */
typedef struct KubeClient
{
	CURL	   *req_easy;		/* plain requests; keeps the connection */
	CURLM	   *watch_multi;	/* all the watches' streams */
	char		base_url[1024];
	char		token_path[MAXPGPATH];
	char		ca_path[MAXPGPATH];
	int			req_timeout_ms;
	int64		req_deadline_ms;	/* monotonic; 0 = none */
	long		last_status;	/* the last request's HTTP status, 0: no answer */

	char		token[8192];
	bool		token_loaded;
	struct stat token_stat;
	int64		token_read_ms;

	KubeWatch  *watches[KUBE_MAX_WATCHES];
	int			nwatches;
} KubeClient;

extern void kube_global_init(void);
extern void kube_client_init(KubeClient *kc);
extern void kube_client_close(KubeClient *kc);
extern void kube_forget_connections(KubeClient *kc);
extern void kube_configure(KubeClient *kc, const char *url, const char *token_file,
						   const char *ca_file, int timeout_ms);
extern bool kube_request(KubeClient *kc, const char *method, const char *path,
						 const char *content_type, const char *body,
						 KubeResponse *resp);
extern void kube_response_free(KubeResponse *resp);
extern void kube_set_deadline(KubeClient *kc, int64 deadline_ms);

/* kube_configure from the hapg.* settings (settings.c) */
extern void hapg_kube_configure(KubeClient *kc, int retry_timeout_s);
extern char *kube_escape(const char *s);

/* API paths, built in one place (kwrite.c); palloc'd. */
extern char *hapg_lease_path(const char *ns, const char *name);
extern char *hapg_leases_path(const char *ns);
extern char *hapg_lease_watch_path(const char *ns, const char *name,
								   int timeout_s, const char *rv);
extern char *hapg_pod_path(const char *ns, const char *name);
extern char *hapg_pods_path(const char *ns, const char *cluster);
extern char *hapg_pods_watch_path(const char *ns, const char *cluster,
								  int timeout_s, const char *rv);

extern KubeWatch *kube_watch_create(KubeClient *kc, const char *what,
									KubeEventFn fn, void *arg);
extern bool kube_watch_start(KubeWatch *w, const char *path, int timeout_s);
extern void kube_watch_stop(KubeWatch *w);
extern bool kube_watch_active(KubeWatch *w);
extern const char *kube_watch_error(KubeWatch *w);
extern void kube_watch_clear_error(KubeWatch *w);
extern int	kube_watch_pump(KubeClient *kc);
extern int	kube_watch_sockets(KubeClient *kc, int *fds, int *events, int max);
extern long kube_watch_timeout_ms(KubeClient *kc);

#endif							/* HAPG_KUBE_H */
