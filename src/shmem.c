/*
 * shmem.c
 *		The shared state the worker publishes and SQL reads.
 *
 * A fixed-size struct of plain values guarded by one LWLock that lives
 * inside it (no pointers: a restarted worker and every backend read the
 * same bytes safely).
 */
#include "hapg.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

HapgShared *hapg_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(HapgShared)));
}

/* Create or attach; the tranche is registered in every process that uses it. */
static void
shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	hapg_shared = ShmemInitStruct("hapg", sizeof(HapgShared), &found);
	if (!found)
	{
		memset(hapg_shared, 0, sizeof(HapgShared));
		hapg_shared->tranche_id = LWLockNewTrancheId();
		LWLockInitialize(&hapg_shared->lock, hapg_shared->tranche_id);
		hapg_shared->worker_procno = -1;
		pg_atomic_init_u64(&hapg_shared->writable_until, hapg_initial_writable_until());
		strlcpy(hapg_shared->last_error, "worker not started yet",
				sizeof(hapg_shared->last_error));
	}
	LWLockRelease(AddinShmemInitLock);
	LWLockRegisterTranche(hapg_shared->tranche_id, "hapg");
}

void
hapg_shmem_request(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
}

/* Make sure this process can use hapg_shared (and its lock's tranche name). */
void
hapg_shmem_attach(void)
{
	if (hapg_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("hapg is not loaded through shared_preload_libraries"),
				 errhint("Add hapg to shared_preload_libraries in postgresql.conf and restart the server.")));
	LWLockRegisterTranche(hapg_shared->tranche_id, "hapg");
}
