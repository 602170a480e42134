/*
 * kube.h
 *		The Kubernetes API client: one kept-alive connection for requests,
 *		separate streams for watches.  Every request has a deadline.
 */
#ifndef HAPG_KUBE_H
#define HAPG_KUBE_H

#include "hapg.h"
#include "kjson.h"

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

extern void kube_global_init(void);
extern void kube_forget_connections(void);
extern void kube_configure(const char *url, const char *token_file,
						   const char *ca_file, int timeout_ms);
extern bool kube_request(const char *method, const char *path,
						 const char *content_type, const char *body,
						 KubeResponse *resp);
extern void kube_response_free(KubeResponse *resp);
extern void kube_set_deadline(int64 deadline_ms);
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

extern KubeWatch *kube_watch_create(const char *what, KubeEventFn fn, void *arg);
extern bool kube_watch_start(KubeWatch *w, const char *path, int timeout_s);
extern void kube_watch_stop(KubeWatch *w);
extern bool kube_watch_active(KubeWatch *w);
extern const char *kube_watch_error(KubeWatch *w);
extern void kube_watch_clear_error(KubeWatch *w);
extern int	kube_watch_pump(void);
extern int	kube_watch_sockets(int *fds, int *events, int max);
extern long kube_watch_timeout_ms(void);

#endif							/* HAPG_KUBE_H */
