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

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"

PG_MODULE_MAGIC;

/* tests of an uninstalled build preload it by path: the worker must match */
#ifndef HAPG_LIBRARY_NAME
#define HAPG_LIBRARY_NAME "hapg"
#endif

void		_PG_init(void);

/* The worker starts with the postmaster, and again a second after it exits. */
static void
register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_PostmasterStart;
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_library_name, HAPG_LIBRARY_NAME, BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "hapg_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "hapg worker", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "hapg worker", BGW_MAXLEN);
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
	hapg_define_settings();
	hapg_startup_guard();
	hapg_shmem_request();
	register_worker();
}
