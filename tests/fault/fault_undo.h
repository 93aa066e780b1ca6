/*
 * fault_undo.h - the undo log shared by the power-loss shim (fault_shim.c,
 * loaded into pos-agent with LD_PRELOAD) and the tool that plays a power cut
 * (fault_powercut.c).
 *
 * One log per tracked file, "<undo dir>/<file name>.undo":
 *
 *   header   "PFU1", uint32 path length, the file's path, uint64 synced size
 *   record*  uint32 kind (write or truncate), uint64 offset, uint64 length,
 *            uint64 file size before, uint64 pre-image length, the pre-image
 *
 * A record is appended BEFORE the write (or truncate) it describes reaches the
 * file, with the bytes the write is about to replace (the part of the region
 * below the file's size then). A successful fsync/fdatasync of the file
 * empties the log and records the new synced size. Undoing the records from
 * the newest to the oldest and truncating to the synced size gives the file
 * as it was at its last sync: what a power cut leaves when the device kept
 * none of the unsynced writes. Keeping a prefix of the records (in order,
 * the last one possibly torn at a 512-byte sector) gives the other states a
 * disk that writes in order may leave.
 *
 * Integers are in the host's byte order: the log never leaves the machine.
 */
#ifndef POS_FAULT_UNDO_H
#define POS_FAULT_UNDO_H

#include <stdint.h>

#define FAULT_UNDO_MAGIC "PFU1"
#define FAULT_UNDO_WRITE 1u
#define FAULT_UNDO_TRUNCATE 2u

struct fault_undo_record {
  uint32_t kind;
  uint64_t offset;
  uint64_t length;
  uint64_t size_before;
  uint64_t pre_length;
} __attribute__((packed));

#endif
