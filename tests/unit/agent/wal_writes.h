/*
 * wal_writes.h - what the journal tests see of the WAL's writes: this
 * executable's pwrite64 (libsqlite3 calls it, as it would an LD_PRELOAD
 * shim's) counts, or fails with ENOSPC, the writes to a file whose name
 * ends in "-wal", while the test asks it to.
 */
#ifndef TESTS_UNIT_AGENT_WAL_WRITES_H
#define TESTS_UNIT_AGENT_WAL_WRITES_H

#include <stdatomic.h>

/* While set, each write to a WAL adds one to wal_writes_seen. */
extern atomic_int wal_writes_counting;
extern atomic_int wal_writes_seen;
/* While set, each write to a WAL fails with ENOSPC (a full disk). */
extern atomic_int wal_writes_fail;

#endif
