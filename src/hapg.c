/*
 * hapg.c
 *		Module entry point: settings, start-up guard, shared memory, worker
 *		registration.
 *
 * hapg must be in shared_preload_libraries: its worker starts with the
 * postmaster (before recovery ends, so standbys run it too) and its state
 * lives in shared memory sized at start-up.
 */
#include "hapg.h"
#include "http.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"

PG_MODULE_MAGIC;

/* tests of an uninstalled build preload it by path: the worker must match */
#ifndef HAPG_LIBRARY_NAME
#define HAPG_LIBRARY_NAME "hapg"
#endif

void		_PG_init(void);

/*
 * A background worker of this library that starts with the postmaster and
 * again restart_s seconds after it exits (hapg's worker, the HTTP worker).
 */
void
hapg_register_worker(const char *library_name, const char *function,
					 const char *name, int restart_s)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_PostmasterStart;
	worker.bgw_restart_time = restart_s;
	strlcpy(worker.bgw_library_name, library_name, BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker.bgw_name, name, BGW_MAXLEN);
	strlcpy(worker.bgw_type, name, BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/* Load-time set-up: only from shared_preload_libraries. */
void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("hapg must be loaded via shared_preload_libraries"),
				 errhint("Add 'hapg' to shared_preload_libraries in postgresql.conf, set hapg.cluster_name, and restart the server.")));
	hapg_http_init(HAPG_LIBRARY_NAME);	/* before the hapg prefix is reserved */
	hapg_define_settings();
	hapg_commitguard_init();
	hapg_startup_guard();
	hapg_shmem_request();
	/* the worker starts with the postmaster, and again a second after it exits */
	hapg_register_worker(HAPG_LIBRARY_NAME, "hapg_worker_main", "hapg worker", 1);
}
