/*
 * batcher.h - what a batch is made of on the wire: sales read back from the
 * journal become a pos.v1.Batch (envelope + sales), serialised and
 * zstd-compressed with proto_batch_pack, within a size cap.
 *
 * batcher_pack is the journal_pack_fn the uplink hands to
 * JOURNAL_OP_NEXT_BATCH: it runs on the journal's writer thread and reads
 * only its arguments and the (immutable) batcher identity, so it needs no
 * lock. The journal stores the bytes it returns and the uplink sends exactly
 * those bytes, on the first attempt and every retry.
 */
#ifndef AGENT_UPLINK_BATCHER_H
#define AGENT_UPLINK_BATCHER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "journal/journal.h"

#define BATCHER_ID_MAX 64

/* Who the batches are from. Set once before the first seal, then only read;
 * but for the dictionary, which the loop thread changes while the writer
 * thread seals (batcher_use_dictionary). */
struct batcher_identity {
  char store_id[BATCHER_ID_MAX + 1];
  char device_id[BATCHER_ID_MAX + 1];
  char agent_version[32];
  int zstd_level; /* 1..19, or 0: batcher_zstd_level chooses by size */
  /* The zstd dictionary new batches are sealed with: PROTO_ZSTD_DICT_NONE
   * until the collector says it knows one (Limits.zstd_dictionaries). With
   * sales-2 (proto_zstd_dictionary_compacts) the codec packs the sales in
   * the compact encoding too (pos.proto, BatchEnvelope.compact_sales), which
   * only a collector that lists sales-2 can decompress: one rolled back
   * answers 400 and the uploader seals the sales again without it. */
  _Atomic uint32_t zstd_dictionary;
};

/*
 * Fills `identity` (store and device are copied, truncated never: returns
 * -1 if either is longer than BATCHER_ID_MAX). Returns 0 or -1.
 */
int batcher_identity_init(struct batcher_identity *identity, const char *store_id,
                          const char *device_id, int zstd_level);

/*
 * Seals the batches from the next one on with zstd dictionary `dict_id`
 * (PROTO_ZSTD_DICT_NONE: without one). Batches already sealed keep the
 * bytes they were sealed with: they are resent as they are. For the loop
 * thread, when an acknowledgement says which dictionaries the collector
 * knows (proto_zstd_dictionary_choose); a seal running meanwhile on the
 * writer thread uses the one it read when it started.
 */
void batcher_use_dictionary(struct batcher_identity *identity, uint32_t dict_id);

/* The dictionary the next batch will be sealed with. Any thread. */
uint32_t batcher_dictionary(const struct batcher_identity *identity);

/* The zstd level for a batch of `packed_len` bytes before compression:
 * `configured` when it is 1..19; for 0 (the default), 19 up to
 * BATCHER_SMALL_BATCH bytes, a store's regular batch (about 150 sales),
 * where with the sales-1 dictionary the body is a fifth smaller than at
 * level 3 (tests/bench/wire_bench.sh) for 3.5 ms and 1.7 MB of zstd tables
 * while it seals (648 KB at level 3; freed after), and 3 above it, where
 * level 19's tables grow with the input (17 MB for a 600 KB batch, which a
 * device catching up seals one after another). Pure. */
#define BATCHER_SMALL_BATCH (32 * 1024)
int batcher_zstd_level(int configured, size_t packed_len);

/*
 * journal_pack_fn: packs the first *used of in->sales into one body of at
 * most in->max_bytes whose protobuf, before compression, is at most
 * in->max_decoded_bytes (0 = no such cap): all of them if they fit;
 * otherwise the most that fit, found by shrinking; one sale is packed
 * whatever its size, so a batch can always be made. `pack_arg` is a const struct batcher_identity *.
 * Envelope: store_id, device_id, journal_id (16 bytes), batch_seq, kind
 * live, created_ms, agent_version, first/last seq, sale_count; each sale
 * carries seq, received_ms and store_id. Compressed with the identity's
 * dictionary as it is when the call starts (envelope.zstd_dictionary says
 * which), every try of one call alike.
 * Returns 0, or JOURNAL_ENOMEM / JOURNAL_EINVAL (a bad journal id).
 */
int batcher_pack(void *pack_arg, const struct journal_seal_input *in, uint8_t **body,
                 size_t *body_len, size_t *used);


#endif
