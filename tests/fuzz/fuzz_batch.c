/*
 * fuzz_batch.c - the collector's way in: the body a device POSTs to
 * /v1/batches (one zstd frame of a pos.v1.Batch protobuf) through
 * proto_batch_unpack (size limits, bounded zstd, protobuf-c, envelope
 * checks) and proto_sale_check on every sale, as collector/server/routes.c
 * and collector/ingest/ingest.c do, with the collector's default limits.
 *
 * The corpus holds real bodies, byte for byte what pos-batch and the
 * agent's batcher send. Random changes to compressed bytes rarely make a
 * valid frame, so a custom mutator usually decompresses the input, lets
 * libFuzzer mutate the protobuf inside, and compresses it again; the rest
 * of the time it mutates the raw body, to reach the zstd and limit paths.
 *
 * A batch that unpacks is packed again (proto_batch_pack, as the agent
 * seals one) and must unpack to the same sales with the same verdicts: the
 * two sides read one contract.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "proto/codec.h"

/* What the mutator decompresses into; larger inputs are mutated raw. */
#define FUZZ_MUTATE_MAX_DECODED (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);

static void fuzz_fail(const char *what)
{
  fprintf(stderr, "fuzz-batch: %s\n", what);
  abort();
}

/*
 * Runs the collector's check on every sale; returns how many pass. Also
 * formats the journal id (as the collector's logs do) and every sale's
 * money, as pos-decode does for any record of pos.sales.v1 or pos.dlq.v1
 * (a dead letter is the sale as it came, unchecked).
 * Any exponent must format (regressions/batch/money-format-exponent-96.zst
 * divided by zero once).
 */
static size_t fuzz_check_sales(const Pos__V1__Batch *batch, int *verdicts, size_t n)
{
  char field[64], why[200], money[64], hex[33];
  size_t passed = 0;

  proto_journal_id_format(batch->envelope->journal_id.data, hex);
  if (strlen(hex) != 32)
    fuzz_fail("journal id not formatted as 32 hex digits");
  for (size_t i = 0; i < batch->n_sales; i++) {
    const Pos__V1__Sale *sale = batch->sales[i];
    int rc;
    field[0] = why[0] = '\0';
    rc = proto_sale_check(sale, field, sizeof(field), why, sizeof(why));
    if (rc != 0 && (field[0] == '\0' || why[0] == '\0'))
      fuzz_fail("a refused sale without a field and a reason (the DLQ record needs both)");
    if (i < n)
      verdicts[i] = rc;
    if (rc == 0)
      passed++;
    proto_money_format(sale->total, sale->currency_exponent, money, sizeof(money));
    for (size_t l = 0; l < sale->n_lines; l++)
      proto_money_format(sale->lines[l]->unit_price, sale->currency_exponent, money,
                         sizeof(money));
  }
  return passed;
}

/* pack(unpack(body)) must unpack again, to as many sales with the same verdicts. */
static void fuzz_round_trip(const Pos__V1__Batch *batch, const struct proto_limits *limits)
{
  Pos__V1__Batch *again = NULL;
  uint8_t *body = NULL;
  size_t body_len = 0;
  int *first = NULL, *second = NULL;
  char err[256];
  size_t n = batch->n_sales;

  /* With the dictionary its envelope names (0 or one the unpack knew): a
   * body must name the one its envelope does, and sales-2 packs compact. */
  if (proto_batch_pack_dict(batch, 1, batch->envelope->zstd_dictionary, &body, &body_len) != 0)
    fuzz_fail("a batch that unpacked does not pack again");
  if (body_len > limits->max_compressed)
    goto out; /* a frame of incompressible noise can grow a little: fine */
  if (proto_batch_unpack(body, body_len, limits, &again, err, sizeof(err)) != 0) {
    fprintf(stderr, "fuzz-batch: re-packed batch refused: %s\n", err);
    fuzz_fail("pack and unpack disagree");
  }
  if (again->n_sales != n || again->n_inventory_deltas != batch->n_inventory_deltas ||
      again->envelope->batch_seq != batch->envelope->batch_seq ||
      strcmp(again->envelope->store_id, batch->envelope->store_id) != 0)
    fuzz_fail("the re-packed batch is not the same batch");
  first = calloc(n ? n : 1, sizeof(*first));
  second = calloc(n ? n : 1, sizeof(*second));
  if (!first || !second)
    goto out;
  fuzz_check_sales(batch, first, n);
  fuzz_check_sales(again, second, n);
  if (memcmp(first, second, n * sizeof(*first)) != 0)
    fuzz_fail("a sale's verdict changed after pack and unpack");
out:
  free(first);
  free(second);
  if (again)
    pos__v1__batch__free_unpacked(again, NULL);
  free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  /* The collector's defaults (collector/config.c, proto/codec.h). */
  const struct proto_limits limits = {PROTO_DEFAULT_MAX_COMPRESSED, PROTO_DEFAULT_MAX_DECODED,
                                      PROTO_DEFAULT_MAX_SALES};
  Pos__V1__Batch *batch = NULL;
  char err[256] = "";
  int rc;

  rc = proto_batch_unpack(data, size, &limits, &batch, err, sizeof(err));
  if (rc != PROTO_OK) {
    if (batch)
      fuzz_fail("a refused batch was handed out");
    if (err[0] == '\0' || !proto_strerror(rc))
      fuzz_fail("a refused batch without a reason");
    return 0;
  }
  if (!batch || !batch->envelope || batch->envelope->journal_id.len != 16 ||
      batch->n_sales > limits.max_sales)
    fuzz_fail("proto_batch_unpack accepted a batch its contract refuses");
  fuzz_check_sales(batch, NULL, 0);
  fuzz_round_trip(batch, &limits);
  pos__v1__batch__free_unpacked(batch, NULL);
  return 0;
}

/* Three times in four: mutate the protobuf inside the frame. */
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
  unsigned long long declared = ZSTD_getFrameContentSize(data, size);
  uint8_t *decoded = NULL;
  size_t decoded_len, mutated_len, bound, packed_len;
  size_t out = 0;

  if (seed % 4 == 0 || declared == ZSTD_CONTENTSIZE_ERROR ||
      declared == ZSTD_CONTENTSIZE_UNKNOWN || declared > FUZZ_MUTATE_MAX_DECODED)
    return LLVMFuzzerMutate(data, size, max_size);
  /* Room to grow the message a little. */
  decoded = malloc((size_t)declared + 4096);
  if (!decoded)
    return LLVMFuzzerMutate(data, size, max_size);
  decoded_len = ZSTD_decompress(decoded, (size_t)declared + 4096, data, size);
  if (ZSTD_isError(decoded_len)) {
    free(decoded);
    return LLVMFuzzerMutate(data, size, max_size);
  }
  mutated_len = LLVMFuzzerMutate(decoded, decoded_len, (size_t)declared + 4096);
  bound = ZSTD_compressBound(mutated_len);
  if (bound <= max_size) {
    packed_len = ZSTD_compress(data, max_size, decoded, mutated_len, 1 + (int)(seed % 3));
    if (!ZSTD_isError(packed_len))
      out = packed_len;
  }
  free(decoded);
  return out ? out : LLVMFuzzerMutate(data, size, max_size);
}
