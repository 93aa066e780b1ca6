/*
 * codec.c - batch bodies: protobuf inside zstd frames, unpacked within limits; and
 * the collector-side check of a decoded sale.
 *
 * Limits are checked before the memory they protect is spent: the declared
 * content size before decompressing, the decompressed size while
 * decompressing, and the object counts (a census of the wire bytes, walking
 * the message descriptors protoc-c generated) before protobuf-c unpacks.
 */
#include "proto/codec.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

const char *proto_strerror(int code)
{
  switch (code) {
  case PROTO_OK:
    return "ok";
  case PROTO_ENOMEM:
    return "out of memory";
  case PROTO_ETOOBIG:
    return "body too large";
  case PROTO_EBOMB:
    return "body decompresses beyond the limit";
  case PROTO_EZSTD:
    return "body is not valid zstd";
  case PROTO_EDECODE:
    return "body is not a valid protobuf message";
  case PROTO_EENVELOPE:
    return "batch envelope incomplete";
  case PROTO_ETOOMANY:
    return "batch holds more objects than the limits allow";
  case PROTO_EDICT:
    return "body compressed with an unknown zstd dictionary";
  }
  return "unknown codec error";
}

/* ---- zstd dictionaries --------------------------------------------------- */

/* proto/dict/sales-N.zdict, embedded at build time (scripts/embed.cmake). */
extern const unsigned char proto_dict_sales_1[];
extern const size_t proto_dict_sales_1_len;
extern const unsigned char proto_dict_sales_2[];
extern const size_t proto_dict_sales_2_len;

/* Every dictionary this build knows, oldest first; an id is never reused. */
static const uint32_t proto_dict_ids[] = {PROTO_ZSTD_DICT_SALES_1, PROTO_ZSTD_DICT_SALES_2};
#define PROTO_DICT_COUNT (sizeof(proto_dict_ids) / sizeof(proto_dict_ids[0]))
/* Prepared decompression dictionaries, made once on first use and kept
 * until exit: a collector decompresses a body every millisecond or so, and
 * preparing one digests the whole dictionary. (Compression, an agent's
 * seal every few minutes, loads it per batch: proto_batch_pack_dict.) */
static ZSTD_DDict *proto_ddicts[PROTO_DICT_COUNT];
static pthread_once_t proto_ddicts_once = PTHREAD_ONCE_INIT;

const uint32_t *proto_zstd_dictionaries_known(size_t *count)
{
  *count = PROTO_DICT_COUNT;
  return proto_dict_ids;
}

void proto_limits_advertise_dictionaries(Pos__V1__Limits *limits)
{
  /* protobuf-c only reads a message it packs: the cast never leads to a write. */
  limits->zstd_dictionaries = (uint32_t *)(uintptr_t)proto_dict_ids;
  limits->n_zstd_dictionaries = PROTO_DICT_COUNT;
}

/* The index of dictionary `id` in proto_dict_ids, or -1. */
static int proto_dict_index(uint32_t id)
{
  for (size_t i = 0; i < PROTO_DICT_COUNT; i++)
    if (proto_dict_ids[i] == id)
      return (int)i;
  return -1;
}

uint32_t proto_zstd_dictionary_choose(const uint32_t *offered, size_t count)
{
  int best = -1;

  for (size_t i = 0; i < count; i++) {
    int index = proto_dict_index(offered[i]);
    if (index > best)
      best = index;
  }
  return best < 0 ? PROTO_ZSTD_DICT_NONE : proto_dict_ids[best];
}

static void proto_dict_bytes(int index, const void **bytes, size_t *len)
{
  /* One entry per id of proto_dict_ids, in its order. */
  switch (index) {
  case 1:
    *bytes = proto_dict_sales_2;
    *len = proto_dict_sales_2_len;
    break;
  default:
    *bytes = proto_dict_sales_1;
    *len = proto_dict_sales_1_len;
    break;
  }
}

static void proto_ddicts_init(void)
{
  for (size_t i = 0; i < PROTO_DICT_COUNT; i++) {
    const void *bytes;
    size_t len;
    proto_dict_bytes((int)i, &bytes, &len);
    proto_ddicts[i] = ZSTD_createDDict(bytes, len);
  }
}

/* The prepared decompression dictionary `id`, or NULL (unknown, or no memory). */
static const ZSTD_DDict *proto_ddict(uint32_t id)
{
  int index = proto_dict_index(id);

  if (index < 0)
    return NULL;
  pthread_once(&proto_ddicts_once, proto_ddicts_init);
  return proto_ddicts[index];
}

int proto_zstd_dictionary_compacts(uint32_t dict_id)
{
  /* sales-2 and every later one: the id says the encoding (codec.h). */
  return dict_id >= PROTO_ZSTD_DICT_SALES_2 && proto_dict_index(dict_id) >= 0;
}

static int proto_zstd_skippable(const uint8_t *in, size_t in_len);

uint32_t proto_zstd_dictionary_of(const uint8_t *body, size_t body_len)
{
  size_t pos = 0;

  while (pos < body_len && proto_zstd_skippable(body + pos, body_len - pos)) {
    size_t frame_size = ZSTD_findFrameCompressedSize(body + pos, body_len - pos);
    if (ZSTD_isError(frame_size) || frame_size == 0)
      return PROTO_ZSTD_DICT_NONE;
    pos += frame_size;
  }
  return pos < body_len ? ZSTD_getDictID_fromFrame(body + pos, body_len - pos)
                        : PROTO_ZSTD_DICT_NONE;
}

/* ---- packing ------------------------------------------------------------ */

int proto_batch_pack(const Pos__V1__Batch *batch, int zstd_level, uint8_t **body,
                     size_t *body_len)
{
  return proto_batch_pack_dict(batch, zstd_level, PROTO_ZSTD_DICT_NONE, body, body_len);
}

/*
 * Copies of batch's envelope and sales in the compact encoding (pos.proto,
 * Sale.business_time_step_ms), pointing into `batch` for everything else.
 * The differences are taken in unsigned 64-bit arithmetic, which the
 * restore (proto_batch_restore) undoes exactly whatever the values.
 */
static void proto_batch_compact(const Pos__V1__Batch *batch, Pos__V1__Batch *copy,
                                Pos__V1__BatchEnvelope *envelope, Pos__V1__Sale *sales,
                                Pos__V1__Sale **sale_ptrs)
{
  uint64_t time = (uint64_t)batch->envelope->created_ms;
  uint64_t seq = batch->envelope->first_seq - 1;

  *copy = *batch;
  *envelope = *batch->envelope;
  envelope->compact_sales = 1;
  copy->envelope = envelope;
  copy->sales = sale_ptrs;
  for (size_t i = 0; i < batch->n_sales; i++) {
    Pos__V1__Sale *sale = &sales[i];
    *sale = *batch->sales[i];
    sale->business_time_step_ms = (int64_t)((uint64_t)sale->business_time_ms - time);
    time = (uint64_t)sale->business_time_ms;
    sale->received_after_business_ms = (int64_t)((uint64_t)sale->received_ms - time);
    sale->seq_skip = sale->seq - seq - 1;
    seq = sale->seq;
    sale->business_time_ms = 0;
    sale->received_ms = 0;
    sale->seq = 0;
    /* The envelope says it; a sale of another store keeps its own (and is
     * dead-lettered for it, as a canonical one is). */
    if (sale->store_id && envelope->store_id && strcmp(sale->store_id, envelope->store_id) == 0)
      sale->store_id = (char *)(uintptr_t)protobuf_c_empty_string;
    sale_ptrs[i] = sale;
  }
}

int proto_batch_serialize(const Pos__V1__Batch *batch, int compact, uint8_t **out,
                          size_t *out_len)
{
  Pos__V1__Batch copy;
  Pos__V1__BatchEnvelope envelope;
  Pos__V1__Sale *sales = NULL, **sale_ptrs = NULL;
  const Pos__V1__Batch *what = batch;
  uint8_t *packed = NULL;
  size_t packed_len;
  int rc = PROTO_ENOMEM;

  if (compact && !batch->envelope)
    return PROTO_EENVELOPE;
  if (compact) {
    sales = malloc((batch->n_sales ? batch->n_sales : 1) * sizeof(*sales));
    sale_ptrs = malloc((batch->n_sales ? batch->n_sales : 1) * sizeof(*sale_ptrs));
    if (!sales || !sale_ptrs)
      goto out;
    proto_batch_compact(batch, &copy, &envelope, sales, sale_ptrs);
    what = &copy;
  }
  packed_len = pos__v1__batch__get_packed_size(what);
  packed = malloc(packed_len ? packed_len : 1);
  if (!packed)
    goto out;
  pos__v1__batch__pack(what, packed);
  *out = packed;
  *out_len = packed_len;
  rc = PROTO_OK;
out:
  free(sales);
  free(sale_ptrs);
  return rc;
}

int proto_batch_pack_dict(const Pos__V1__Batch *batch, int zstd_level, uint32_t dict_id,
                          uint8_t **body, size_t *body_len)
{
  int dict_index = dict_id == PROTO_ZSTD_DICT_NONE ? -1 : proto_dict_index(dict_id);
  const void *dict = NULL;
  size_t dict_len = 0;
  ZSTD_CCtx *cctx = NULL;
  size_t packed_len = 0;
  uint8_t *packed = NULL;
  uint8_t *compressed = NULL;
  size_t bound, written;
  int rc;

  if (dict_id != PROTO_ZSTD_DICT_NONE && dict_index < 0) {
    rc = PROTO_EDICT;
    goto out;
  }
  rc = proto_batch_serialize(batch, proto_zstd_dictionary_compacts(dict_id), &packed,
                             &packed_len);
  if (rc)
    goto out;
  rc = PROTO_ENOMEM;
  bound = ZSTD_compressBound(packed_len);
  compressed = malloc(bound);
  if (!compressed)
    goto out;
  if (dict_index >= 0) {
    proto_dict_bytes(dict_index, &dict, &dict_len);
    cctx = ZSTD_createCCtx();
    if (!cctx)
      goto out;
  }
  /* One-shot compression writes the content size into the frame header,
   * which lets the receiver refuse a bomb before decompressing; with a
   * dictionary, the header names it too. The dictionary is loaded for
   * each batch, not kept prepared: zstd then sizes its tables for the
   * batch (a 60-sale one: far below the 0.44 MB a prepared level-3
   * dictionary holds, 1.1 MB at level 19), and an agent seals a batch
   * every few minutes, so nothing stays resident between seals. */
  if (dict)
    written = ZSTD_compress_usingDict(cctx, compressed, bound, packed, packed_len, dict, dict_len,
                                      zstd_level);
  else
    written = ZSTD_compress(compressed, bound, packed, packed_len, zstd_level);
  if (ZSTD_isError(written)) {
    rc = PROTO_EZSTD;
    goto out;
  }
  *body = compressed;
  *body_len = written;
  compressed = NULL;
  rc = PROTO_OK;
out:
  ZSTD_freeCCtx(cctx);
  free(packed);
  free(compressed);
  return rc;
}

/* Whether the frame at `in` is a skippable one (RFC 8878, 3.1.2): no dictionary, no data. */
static int proto_zstd_skippable(const uint8_t *in, size_t in_len)
{
  uint32_t magic;

  if (in_len < 4)
    return 0;
  magic = (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
  return (magic & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START;
}

/*
 * The content size the frames of `in` declare, summed; ZSTD_CONTENTSIZE_UNKNOWN
 * if any frame leaves it out, ZSTD_CONTENTSIZE_ERROR if the bytes are not
 * whole frames or their data frames name different dictionaries (a frame
 * without one must not be decoded with one: its first repeat offsets would
 * be the dictionary's). *dict_id is the dictionary they name, or 0.
 * (ZSTD_findDecompressedSize does the sum but is not stable API.)
 */
static unsigned long long proto_zstd_declared_size(const uint8_t *in, size_t in_len,
                                                   uint32_t *dict_id)
{
  unsigned long long total = 0, frame_content;
  size_t pos = 0, frame_size;
  int unknown = 0, data_frames = 0;

  *dict_id = PROTO_ZSTD_DICT_NONE;
  if (in_len == 0)
    return ZSTD_CONTENTSIZE_ERROR;
  while (pos < in_len) {
    frame_content = ZSTD_getFrameContentSize(in + pos, in_len - pos);
    frame_size = ZSTD_findFrameCompressedSize(in + pos, in_len - pos);
    if (frame_content == ZSTD_CONTENTSIZE_ERROR || ZSTD_isError(frame_size) || frame_size == 0)
      return ZSTD_CONTENTSIZE_ERROR;
    if (!proto_zstd_skippable(in + pos, in_len - pos)) {
      uint32_t frame_dict = ZSTD_getDictID_fromFrame(in + pos, in_len - pos);
      if (data_frames++ && frame_dict != *dict_id)
        return ZSTD_CONTENTSIZE_ERROR;
      *dict_id = frame_dict;
    }
    if (frame_content == ZSTD_CONTENTSIZE_UNKNOWN)
      unknown = 1;
    else if (total + frame_content < total)
      return ZSTD_CONTENTSIZE_ERROR;
    else
      total += frame_content;
    pos += frame_size;
  }
  return unknown ? ZSTD_CONTENTSIZE_UNKNOWN : total;
}

/*
 * Decompression contexts kept between bodies, one per thread that decodes at
 * once (the collector's libuv pool has 4): making and freeing one per body
 * cost an allocation of ~100 KiB and its window buffers every batch, and
 * glibc consolidates its free lists on every free that large. A single kept
 * one served one worker of four; the others made their own.
 */
#define PROTO_KEPT_SLOTS 8
static pthread_mutex_t proto_kept_lock = PTHREAD_MUTEX_INITIALIZER;
static ZSTD_DCtx *proto_dctx_kept[PROTO_KEPT_SLOTS];
static size_t proto_dctx_kept_count;
/* Off unless a process asks (proto_codec_keep_between_bodies): a device keeps nothing idle. */
static atomic_int proto_keep_between_bodies;

void proto_codec_keep_between_bodies(int keep)
{
  atomic_store(&proto_keep_between_bodies, keep != 0);
}

static ZSTD_DCtx *proto_dctx_take(void)
{
  ZSTD_DCtx *dctx = NULL;

  pthread_mutex_lock(&proto_kept_lock);
  if (proto_dctx_kept_count)
    dctx = proto_dctx_kept[--proto_dctx_kept_count];
  pthread_mutex_unlock(&proto_kept_lock);
  if (dctx && ZSTD_isError(ZSTD_DCtx_reset(dctx, ZSTD_reset_session_and_parameters))) {
    ZSTD_freeDCtx(dctx);
    dctx = NULL;
  }
  return dctx ? dctx : ZSTD_createDCtx();
}

static void proto_dctx_give(ZSTD_DCtx *dctx)
{
  if (dctx && atomic_load(&proto_keep_between_bodies)) {
    pthread_mutex_lock(&proto_kept_lock);
    if (proto_dctx_kept_count < PROTO_KEPT_SLOTS) {
      proto_dctx_kept[proto_dctx_kept_count++] = dctx;
      dctx = NULL;
    }
    pthread_mutex_unlock(&proto_kept_lock);
  }
  ZSTD_freeDCtx(dctx);
}

/* A decoded body's buffer kept for the next one, up to this size. */
#define PROTO_DECODED_KEPT_MAX (4u * 1024 * 1024)
struct proto_buffer {
  uint8_t *data;
  size_t capacity; /* bytes, the +1 of the bomb check included */
};
static struct proto_buffer *proto_decoded_kept[PROTO_KEPT_SLOTS];
static size_t proto_decoded_kept_count;

/*
 * proto_zstd_decompress into *buffer (grown as needed, reused when large
 * enough; on failure still the caller's to keep or free).
 */
static int proto_zstd_decompress_buffer(const uint8_t *in, size_t in_len, size_t max_out,
                                        struct proto_buffer *buffer, size_t *out_len,
                                        uint32_t *dict_id)
{
  unsigned long long declared = proto_zstd_declared_size(in, in_len, dict_id);
  const ZSTD_DDict *ddict = NULL;
  ZSTD_DCtx *dctx = NULL;
  size_t capacity;
  ZSTD_inBuffer input = {in, in_len, 0};
  ZSTD_outBuffer output;
  int rc = PROTO_EZSTD;

  if (declared == ZSTD_CONTENTSIZE_ERROR)
    return PROTO_EZSTD;
  if (*dict_id != PROTO_ZSTD_DICT_NONE) {
    if (proto_dict_index(*dict_id) < 0)
      return PROTO_EDICT;
    ddict = proto_ddict(*dict_id);
    if (!ddict)
      return PROTO_ENOMEM;
  }
  if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared > max_out)
    return PROTO_EBOMB;
  /* Trust a declared size only as far as the limit; grow otherwise. */
  capacity = declared != ZSTD_CONTENTSIZE_UNKNOWN ? (size_t)declared : 64 * 1024;
  if (capacity > max_out)
    capacity = max_out;
  if (buffer->capacity < capacity + 1) {
    free(buffer->data);
    buffer->capacity = 0;
    buffer->data = malloc(capacity + 1);
    if (buffer->data)
      buffer->capacity = capacity + 1;
  } else {
    capacity = buffer->capacity - 1 > max_out ? max_out : buffer->capacity - 1;
  }
  dctx = proto_dctx_take();
  if (!buffer->data || !dctx) {
    rc = PROTO_ENOMEM;
    goto out;
  }
  /* A kept context was reset (parameters and dictionary) when taken. */
  if (ddict && ZSTD_isError(ZSTD_DCtx_refDDict(dctx, ddict)))
    goto out;
  output.dst = buffer->data;
  output.size = capacity + 1; /* one byte past the limit detects a bomb */
  output.pos = 0;
  for (;;) {
    size_t ret = ZSTD_decompressStream(dctx, &output, &input);
    if (ZSTD_isError(ret))
      goto out;
    if (output.pos > max_out) {
      rc = PROTO_EBOMB;
      goto out;
    }
    if (ret == 0 && input.pos == input.size)
      break; /* the last frame is complete */
    /*
     * ret == 0 with input left: a frame ended and another follows (RFC 8878
     * allows any number, skippable ones included); the next call starts it,
     * and bytes that are not a frame fail there.
     */
    if (ret == 0)
      continue;
    if (output.pos == output.size) {
      size_t grown = capacity * 2 > max_out ? max_out : capacity * 2;
      uint8_t *bigger;
      if (grown <= capacity) {
        rc = PROTO_EBOMB;
        goto out;
      }
      bigger = realloc(buffer->data, grown + 1);
      if (!bigger) {
        rc = PROTO_ENOMEM;
        goto out;
      }
      buffer->data = bigger;
      buffer->capacity = grown + 1;
      capacity = grown;
      output.dst = buffer->data;
      output.size = capacity + 1;
    } else if (input.pos == input.size) {
      goto out; /* truncated frame */
    }
  }
  *out_len = output.pos;
  rc = PROTO_OK;
out:
  proto_dctx_give(dctx);
  return rc;
}

int proto_zstd_decompress(const uint8_t *in, size_t in_len, size_t max_out, uint8_t **out,
                          size_t *out_len)
{
  struct proto_buffer buffer = {NULL, 0};
  uint32_t dict_id;
  int rc = proto_zstd_decompress_buffer(in, in_len, max_out, &buffer, out_len, &dict_id);

  if (rc == PROTO_OK)
    *out = buffer.data;
  else
    free(buffer.data);
  return rc;
}

/* A kept buffer for a decoded body, or an empty one. */
static struct proto_buffer *proto_decoded_take(void)
{
  struct proto_buffer *buffer = NULL;

  pthread_mutex_lock(&proto_kept_lock);
  if (proto_decoded_kept_count)
    buffer = proto_decoded_kept[--proto_decoded_kept_count];
  pthread_mutex_unlock(&proto_kept_lock);
  return buffer ? buffer : calloc(1, sizeof(*buffer));
}

/* Keeps `buffer` for a next body when it is not too large, else frees it. */
static void proto_decoded_give(struct proto_buffer *buffer)
{
  if (!buffer)
    return;
  if (buffer->capacity <= PROTO_DECODED_KEPT_MAX && atomic_load(&proto_keep_between_bodies)) {
    pthread_mutex_lock(&proto_kept_lock);
    if (proto_decoded_kept_count < PROTO_KEPT_SLOTS) {
      proto_decoded_kept[proto_decoded_kept_count++] = buffer;
      buffer = NULL;
    }
    pthread_mutex_unlock(&proto_kept_lock);
  }
  if (buffer)
    free(buffer->data);
  free(buffer);
}

/* Per-message field counters the census keeps; every message of pos.v1 has fewer fields. */
#define PROTO_CENSUS_MAX_FIELDS 32
/* pos.v1 nests three deep (Batch, Sale, SaleLine); deeper is not a batch. */
#define PROTO_CENSUS_MAX_DEPTH 8

/* What the pass over a batch's wire bytes has counted so far. */
struct proto_census {
  const struct proto_limits *limits;
  size_t objects;     /* messages, entries of repeated fields, unknown fields */
  size_t max_objects;
  char *err;
  size_t err_size;
};

/* Reads a base-128 varint at *pos. Returns 0, or -1 when it runs past `len` or 10 bytes. */
static inline int proto_varint(const uint8_t *data, size_t len, size_t *pos, uint64_t *value)
{
  uint64_t result = 0;

  /* Most tags and lengths of a sale fit in one byte. */
  if (*pos < len && data[*pos] < 0x80) {
    *value = data[(*pos)++];
    return 0;
  }
  for (unsigned shift = 0; shift < 64 && *pos < len; shift += 7) {
    uint8_t byte = data[(*pos)++];
    result |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      *value = result;
      return 0;
    }
  }
  return -1;
}

/*
 * The limit on entries of repeated field `field` of `desc`, per message
 * (SIZE_MAX: none but the object count).
 */
/*
 * The repeated fields that have a limit of their own, looked up by name once
 * (proto_census_fields_init): the census compares descriptors' addresses
 * for every list entry instead of names.
 */
static struct {
  const ProtobufCFieldDescriptor *sales, *inventory_deltas, *lines, *payments, *carried_from,
      *carried_rows;
} proto_census_fields;
static pthread_once_t proto_census_fields_once = PTHREAD_ONCE_INIT;

static void proto_census_fields_init(void)
{
  proto_census_fields.sales =
      protobuf_c_message_descriptor_get_field_by_name(&pos__v1__batch__descriptor, "sales");
  proto_census_fields.inventory_deltas = protobuf_c_message_descriptor_get_field_by_name(
      &pos__v1__batch__descriptor, "inventory_deltas");
  proto_census_fields.lines =
      protobuf_c_message_descriptor_get_field_by_name(&pos__v1__sale__descriptor, "lines");
  proto_census_fields.payments =
      protobuf_c_message_descriptor_get_field_by_name(&pos__v1__sale__descriptor, "payments");
  proto_census_fields.carried_from =
      protobuf_c_message_descriptor_get_field_by_name(&pos__v1__sale__descriptor, "carried_from");
  proto_census_fields.carried_rows = protobuf_c_message_descriptor_get_field_by_name(
      &pos__v1__batch_envelope__descriptor, "carried_rows");
}

static size_t proto_census_limit(const struct proto_census *census,
                                 const ProtobufCFieldDescriptor *field)
{
  if (field == proto_census_fields.sales)
    return census->limits->max_sales;
  if (field == proto_census_fields.inventory_deltas || field == proto_census_fields.carried_rows)
    return PROTO_MAX_DELTAS_PER_BATCH;
  if (field == proto_census_fields.lines)
    return PROTO_MAX_LINES_PER_SALE;
  if (field == proto_census_fields.payments)
    return PROTO_MAX_PAYMENTS_PER_SALE;
  if (field == proto_census_fields.carried_from)
    return PROTO_MAX_CARRIED_PER_SALE;
  return SIZE_MAX;
}

/*
 * Skips the value of a field of wire type `wire` at *pos; for a
 * length-delimited one sets *payload and *payload_len. Returns 0, or -1 when
 * the bytes are not well-formed protobuf (groups, wire types 3 and 4, are
 * not used by pos.v1 and protobuf-c refuses them too).
 */
static inline int proto_census_skip(const uint8_t *data, size_t len, size_t *pos, unsigned wire,
                             const uint8_t **payload, size_t *payload_len)
{
  uint64_t value;

  *payload = NULL;
  *payload_len = 0;
  switch (wire) {
  case 0:
    return proto_varint(data, len, pos, &value);
  case 1:
  case 5:
    if (len - *pos < (wire == 1 ? 8u : 4u))
      return -1;
    *pos += wire == 1 ? 8u : 4u;
    return 0;
  case 2:
    if (proto_varint(data, len, pos, &value) != 0 || value > len - *pos)
      return -1;
    *payload = data + *pos;
    *payload_len = (size_t)value;
    *pos += (size_t)value;
    return 0;
  default:
    return -1;
  }
}

/* Says in `err` that message `where` is not protobuf, and what is wrong. Returns PROTO_EDECODE. */
static int proto_census_malformed(const struct proto_census *census, const char *where,
                                  const char *what)
{
  snprintf(census->err, census->err_size,
           "decompressed body is not a pos.v1.Batch protobuf: %s%s%s", where,
           where[0] ? " " : "the batch ", what);
  return PROTO_EDECODE;
}

/* The largest field number protobuf allows (2^29 - 1); protoc refuses a tag above it. */
#define PROTO_FIELD_NUMBER_MAX 536870911u

/*
 * The field numbered `number` of `desc`, or NULL if it has none. protoc-c
 * lists a message's fields by number, and pos.v1 numbers them 1, 2, 3...:
 * the field is then at number - 1, checked before protobuf-c's search.
 */
static const ProtobufCFieldDescriptor *proto_census_field(const ProtobufCMessageDescriptor *desc,
                                                          uint64_t number)
{
  if (number >= 1 && number <= desc->n_fields && desc->fields[number - 1].id == number)
    return &desc->fields[number - 1];
  return protobuf_c_message_descriptor_get_field(desc, (unsigned)number);
}

/*
 * Checks the field number of `key`, read in message `where` ("" for the
 * batch). Returns 0, or PROTO_EDECODE with `err` saying what is wrong.
 *
 * protobuf-c 1.4.1 refuses field number 0 only when its tag fits in one
 * byte: written in two (82 00) it is accepted, kept as an unknown field and
 * packed again as the one-byte tag 02, which protobuf-c and protoc refuse.
 * Above PROTO_FIELD_NUMBER_MAX it is packed again as it came, and protoc
 * refuses that. Either would let one device put into pos.sales.v1 a record
 * that no consumer can decode, so such a batch goes no further than here.
 *
 * An unknown field with a valid number is kept and, in a sale, produced with
 * it to pos.sales.v1, as protobuf means readers to do: a sale from a newer
 * agent (a field added to the contract before the collector is upgraded)
 * then reaches the consumers that know the field. Dropping it would lose data
 * without a word; refusing it would stop every newer agent. Its bytes go out
 * as they came, under a tag protobuf-c packs canonically: only the number
 * must be one that survives that, which is what is checked here.
 */
static int proto_census_key(const struct proto_census *census, uint64_t key, const char *where)
{
  uint64_t number = key >> 3;

  if (number != 0 && number <= PROTO_FIELD_NUMBER_MAX)
    return PROTO_OK;
  snprintf(census->err, census->err_size,
           "%s%scarries field number %" PRIu64 ", which is not valid protobuf (1 to %u): no "
           "consumer could decode it; the batch is refused, fix the sender's encoder",
           where, where[0] ? " " : "batch ", number, PROTO_FIELD_NUMBER_MAX);
  return PROTO_EDECODE;
}

/*
 * Where text[0..len) stops being UTF-8 as protobuf defines a string (no
 * overlong forms, no surrogates, nothing above U+10FFFF) or has a NUL byte,
 * whichever comes first; `len` if neither.
 */
static size_t proto_text_valid_prefix(const uint8_t *text, size_t len)
{
  size_t pos = 0, follow, i;
  uint8_t lead, low, high;

  while (pos < len) {
    lead = text[pos];
    low = 0x80;
    high = 0xbf;
    if (lead < 0x80) {
      if (lead == 0)
        return pos;
      pos++;
      continue;
    } else if (lead >= 0xc2 && lead <= 0xdf)
      follow = 1;
    else if (lead >= 0xe0 && lead <= 0xef)
      follow = 2;
    else if (lead >= 0xf0 && lead <= 0xf4)
      follow = 3;
    else
      return pos;
    /* The second byte's range rules out overlong forms, surrogates and > U+10FFFF. */
    if (lead == 0xe0)
      low = 0xa0;
    else if (lead == 0xed)
      high = 0x9f;
    else if (lead == 0xf0)
      low = 0x90;
    else if (lead == 0xf4)
      high = 0x8f;
    if (len - pos <= follow)
      return pos;
    for (i = 1; i <= follow; i++) {
      if (text[pos + i] < (i == 1 ? low : 0x80) || text[pos + i] > (i == 1 ? high : 0xbf))
        return pos;
    }
    pos += follow + 1;
  }
  return len;
}

/* Bytes of a word: each 0x01, each 0x80. */
#define PROTO_WORD_ONES 0x0101010101010101ULL
#define PROTO_WORD_HIGHS 0x8080808080808080ULL

/*
 * How many bytes at the start of text[0..len), in whole 8-byte words, are
 * ASCII other than NUL: what a sale's text almost always is, checked a word
 * at a time (a byte with its high bit set, or a zero byte, ends it).
 */
static size_t proto_ascii_prefix(const uint8_t *text, size_t len)
{
  size_t pos = 0;
  uint64_t word;

  while (len - pos >= sizeof(word)) {
    memcpy(&word, text + pos, sizeof(word));
    if ((word | ((word - PROTO_WORD_ONES) & ~word)) & PROTO_WORD_HIGHS)
      break;
    pos += sizeof(word);
  }
  return pos;
}

/*
 * Checks the bytes of string field `field` of message `where`. Returns 0,
 * or PROTO_EDECODE with `err` saying what is wrong.
 *
 * protobuf-c takes in any bytes for a string, but protoc's readers (C++,
 * Java, Go, Python) refuse a proto3 string that is not UTF-8, so such a sale
 * in pos.sales.v1 is one most consumers cannot decode; and protobuf-c keeps a
 * string as a C string, so a NUL byte would silently cut it short. The agent
 * only journals UTF-8 without NULs (jansson and sale_json check it): only a
 * broken or hostile sender makes such a batch, and its data stays with it.
 */
static int proto_census_text(const struct proto_census *census, const char *where,
                             const ProtobufCFieldDescriptor *field, const uint8_t *text,
                             size_t len)
{
  size_t ascii = proto_ascii_prefix(text, len);
  size_t valid = ascii + proto_text_valid_prefix(text + ascii, len - ascii);
  const uint8_t *nul = valid < len && text[valid] == 0 ? text + valid : NULL;

  if (valid == len)
    return PROTO_OK;
  snprintf(census->err, census->err_size,
           "%s%s%s %s at byte %zu of %zu: protobuf readers would refuse or cut it; the batch "
           "is refused, fix the sender's encoding",
           where, where[0] ? "." : "", field->name,
           nul ? "holds a NUL byte" : "is not valid UTF-8", nul ? (size_t)(nul - text) : valid,
           len);
  return PROTO_EDECODE;
}

/*
 * Writes " (sale_id X)" for the sale in data[0..len) into `out`, or "" when
 * it has none. Bytes other than printable ASCII become '?': the id goes
 * into an error message and a log line before anything has checked it.
 */
static void proto_census_sale_id(const uint8_t *data, size_t len, char *out, size_t out_size)
{
  const uint8_t *payload, *sale_id = NULL;
  size_t payload_len, sale_id_len = 0, pos = 0, i;
  uint64_t key;
  char text[65];

  out[0] = '\0';
  while (pos < len) {
    if (proto_varint(data, len, &pos, &key) != 0 ||
        proto_census_skip(data, len, &pos, (unsigned)(key & 7), &payload, &payload_len) != 0)
      break; /* the walk says what is wrong with these bytes */
    if (key == ((1u << 3) | 2)) { /* Sale.sale_id; the last one counts, as in protobuf */
      sale_id = payload;
      sale_id_len = payload_len;
    }
  }
  if (!sale_id || sale_id_len == 0)
    return;
  for (i = 0; i < sale_id_len && i < sizeof(text) - 1; i++)
    text[i] = sale_id[i] >= 0x20 && sale_id[i] < 0x7f ? (char)sale_id[i] : '?';
  text[i] = '\0';
  snprintf(out, out_size, " (sale_id %s%s)", text, sale_id_len > i ? "..." : "");
}

/*
 * Where the walk is: the nested message in field `field` (entry `index` of
 * it when repeated) of the message `parent` is in (NULL: the batch). Kept
 * as this chain on the stack and written out as text ("sales[12] (sale_id
 * B-13).lines[0]") only for an error message: formatting it for every
 * message of every batch was most of the census's cost.
 */
struct proto_census_at {
  const struct proto_census_at *parent;
  const ProtobufCFieldDescriptor *field;
  size_t index;
  const uint8_t *data; /* the message's bytes, for a sale's id */
  size_t len;
};

/* Writes where `at` is into out[PROTO_CENSUS_WHERE] ("" for the batch). */
#define PROTO_CENSUS_WHERE 192
static void proto_census_where(const struct proto_census_at *at, char *out)
{
  char where[PROTO_CENSUS_WHERE], sale_id[96];
  const ProtobufCFieldDescriptor *field;

  out[0] = '\0';
  if (!at)
    return;
  field = at->field;
  proto_census_where(at->parent, where);
  sale_id[0] = '\0';
  if (field->descriptor == &pos__v1__sale__descriptor)
    proto_census_sale_id(at->data, at->len, sale_id, sizeof(sale_id));
  /* Cut at PROTO_CENSUS_WHERE - 1 bytes, as it always was (a path that deep is hostile). */
  if (field->label == PROTOBUF_C_LABEL_REPEATED) {
    if (snprintf(out, PROTO_CENSUS_WHERE, "%s%s%s[%zu]%s", where, where[0] ? "." : "",
                 field->name, at->index, sale_id) < 0)
      out[0] = '\0';
  } else if (snprintf(out, PROTO_CENSUS_WHERE, "%s%s%s%s", where, where[0] ? "." : "",
                      field->name, sale_id) < 0) {
    out[0] = '\0';
  }
}

/* proto_census_malformed for the message at `at`. */
static int proto_census_malformed_at(const struct proto_census *census,
                                     const struct proto_census_at *at, const char *what)
{
  char where[PROTO_CENSUS_WHERE];
  proto_census_where(at, where);
  return proto_census_malformed(census, where, what);
}

/*
 * Counts what message `desc` in data[0..len) would make protobuf-c
 * allocate, recursing into nested messages, and stops at the first limit
 * passed: PROTO_ETOOMANY with `err` naming it and where it is
 * ("sales[12]"). PROTO_EDECODE when the bytes are not protobuf. Allocates
 * nothing.
 */
static int proto_census_walk(struct proto_census *census, const ProtobufCMessageDescriptor *desc,
                             const uint8_t *data, size_t len, unsigned depth,
                             const struct proto_census_at *at)
{
  size_t counts[PROTO_CENSUS_MAX_FIELDS];
  const ProtobufCFieldDescriptor *field;
  const uint8_t *payload;
  size_t payload_len, index, limit, pos = 0;
  uint64_t key;
  char where[PROTO_CENSUS_WHERE];
  struct proto_census_at inner;
  int rc;

  if (depth > PROTO_CENSUS_MAX_DEPTH)
    return proto_census_malformed_at(census, at, "nests messages deeper than pos.v1 does");
  /* Only the descriptor's fields are counted (index < n_fields): the rest is never read. */
  memset(counts, 0,
         (desc->n_fields < PROTO_CENSUS_MAX_FIELDS ? desc->n_fields : PROTO_CENSUS_MAX_FIELDS) *
             sizeof(counts[0]));
  while (pos < len) {
    if (proto_varint(data, len, &pos, &key) != 0)
      return proto_census_malformed_at(census, at, "ends inside a field tag");
    if (proto_census_key(census, key, "") != PROTO_OK) {
      proto_census_where(at, where);
      return proto_census_key(census, key, where);
    }
    if (proto_census_skip(data, len, &pos, (unsigned)(key & 7), &payload, &payload_len) != 0)
      return proto_census_malformed_at(census, at, "has a truncated field or a group");
    field = proto_census_field(desc, key >> 3);
    /* Unknown fields are kept (one struct and a copy each): they count. */
    if (field == NULL || field->label == PROTOBUF_C_LABEL_REPEATED ||
        field->type == PROTOBUF_C_TYPE_MESSAGE) {
      if (++census->objects > census->max_objects) {
        snprintf(census->err, census->err_size,
                 "batch holds more than %zu objects (messages, list entries and unknown "
                 "fields); split it",
                 census->max_objects);
        return PROTO_ETOOMANY;
      }
    }
    if (field == NULL)
      continue;
    if (field->type == PROTOBUF_C_TYPE_STRING && payload != NULL &&
        proto_census_text(census, "", field, payload, payload_len) != PROTO_OK) {
      proto_census_where(at, where);
      return proto_census_text(census, where, field, payload, payload_len);
    }
    index = (size_t)(field - desc->fields);
    if (field->label == PROTOBUF_C_LABEL_REPEATED && index < PROTO_CENSUS_MAX_FIELDS) {
      limit = proto_census_limit(census, field);
      if (++counts[index] > limit) {
        proto_census_where(at, where);
        snprintf(census->err, census->err_size, "%s%sholds more than %zu %s, the limit%s",
                 where, where[0] ? " " : "batch ", limit, field->name,
                 desc == &pos__v1__batch__descriptor ? "; split the batch" : "");
        return PROTO_ETOOMANY;
      }
    }
    if (field->type != PROTOBUF_C_TYPE_MESSAGE || payload == NULL)
      continue; /* a message field with another wire type: protobuf-c refuses it */
    inner.parent = at;
    inner.field = field;
    inner.index = counts[index < PROTO_CENSUS_MAX_FIELDS ? index : 0] - 1;
    inner.data = payload;
    inner.len = payload_len;
    rc = proto_census_walk(census, field->descriptor, payload, payload_len, depth + 1, &inner);
    if (rc != PROTO_OK)
      return rc;
  }
  return PROTO_OK;
}

/* ---- pooled batches: one arena per batch ------------------------------------ */

/* A block of the arena; allocations are carved from data[] in order. */
struct proto_chunk {
  struct proto_chunk *next;
  size_t size, used;
  alignas(max_align_t) unsigned char data[];
};

/*
 * The first allocation of a pooled batch's arena: where its arena is, each
 * sale's bytes as they came (in the arena too; NULL when they could not be
 * kept), and the batch.
 */
struct proto_pooled {
  struct proto_chunk *chunks;
  const uint8_t **sale_wire;
  size_t *sale_wire_len;
  size_t sale_wire_count;
  void *note; /* proto_batch_set_note */
  Pos__V1__Batch batch;
};

/*
 * A pooled batch's descriptor: pos.v1.Batch's, copied, so that
 * proto_batch_free tells a pooled batch from one protobuf-c allocated (by
 * this pointer, without reading memory outside the batch), and so that
 * pos__v1__batch__free_unpacked on a pooled batch fails its assertion
 * instead of freeing arena memory one piece at a time.
 */
static ProtobufCMessageDescriptor proto_pooled_descriptor;
static pthread_once_t proto_pooled_once = PTHREAD_ONCE_INIT;

static void proto_pooled_init(void) { proto_pooled_descriptor = pos__v1__batch__descriptor; }

static void *proto_arena_alloc(void *data, size_t size)
{
  struct proto_chunk **chunks = data, *chunk = *chunks;
  size_t need = (size + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);

  if (need < size)
    return NULL;
  if (!chunk || chunk->size - chunk->used < need) {
    size_t grown = chunk ? chunk->size * 2 : 64 * 1024;
    if (grown < need)
      grown = need;
    if (grown > SIZE_MAX - sizeof(*chunk))
      return NULL;
    chunk = malloc(sizeof(*chunk) + grown);
    if (!chunk)
      return NULL;
    chunk->next = *chunks;
    chunk->size = grown;
    chunk->used = 0;
    *chunks = chunk;
  }
  chunk->used += need;
  return chunk->data + chunk->used - need;
}

/* Arena memory is given back all at once, by proto_batch_free. */
static void proto_arena_free(void *data, void *pointer)
{
  (void)data;
  (void)pointer;
}

static void proto_arena_release(struct proto_chunk *chunks)
{
  while (chunks) {
    struct proto_chunk *next = chunks->next;
    free(chunks);
    chunks = next;
  }
}

/* Batch.sales, field 2, length-delimited (pos.proto). */
#define PROTO_BATCH_SALES_KEY ((2u << 3) | 2u)

/*
 * Keeps a copy of decoded[0..len) in the pool's arena and where each
 * entry of Batch.sales is in it, in order, as protobuf-c lists them. Left
 * without (sale_wire NULL) when memory runs out: the sales are packed again.
 */
static void proto_pooled_keep_wire(struct proto_pooled *pool, const uint8_t *decoded, size_t len,
                                   size_t n_sales)
{
  uint8_t *copy = proto_arena_alloc(&pool->chunks, len ? len : 1);
  const uint8_t **wire = proto_arena_alloc(&pool->chunks, (n_sales ? n_sales : 1) * sizeof(*wire));
  size_t *wire_len = proto_arena_alloc(&pool->chunks, (n_sales ? n_sales : 1) * sizeof(size_t));
  size_t pos = 0, count = 0, payload_len;
  const uint8_t *payload;
  uint64_t key;

  if (!copy || !wire || !wire_len)
    return;
  memcpy(copy, decoded, len);
  while (pos < len) {
    if (proto_varint(copy, len, &pos, &key) != 0 ||
        proto_census_skip(copy, len, &pos, (unsigned)(key & 7), &payload, &payload_len) != 0)
      return; /* the census walked these bytes already: not reached */
    if (key != PROTO_BATCH_SALES_KEY)
      continue;
    if (count == n_sales)
      return;
    wire[count] = payload;
    wire_len[count] = payload_len;
    count++;
  }
  if (count != n_sales)
    return;
  pool->sale_wire = wire;
  pool->sale_wire_len = wire_len;
  pool->sale_wire_count = count;
}

/*
 * protobuf-c's unpack of decoded[0..len) into a new arena (pooled) or
 * with malloc. NULL when the bytes are not a pos.v1.Batch or memory ran out.
 */
static Pos__V1__Batch *proto_batch_decode(const uint8_t *decoded, size_t len, int pooled)
{
  struct proto_chunk *chunks = NULL;
  ProtobufCAllocator arena = {proto_arena_alloc, proto_arena_free, &chunks};
  struct proto_pooled *pool;
  Pos__V1__Batch *msg;

  if (!pooled)
    return pos__v1__batch__unpack(NULL, len, decoded);
  pthread_once(&proto_pooled_once, proto_pooled_init);
  pool = proto_arena_alloc(&chunks, sizeof(*pool));
  msg = pool ? pos__v1__batch__unpack(&arena, len, decoded) : NULL;
  if (!msg) {
    proto_arena_release(chunks);
    return NULL;
  }
  /* Nothing points at the top message but us: move it beside its arena's head. */
  pool->batch = *msg;
  pool->batch.base.descriptor = &proto_pooled_descriptor;
  pool->chunks = chunks;
  pool->sale_wire = NULL;
  pool->sale_wire_len = NULL;
  pool->sale_wire_count = 0;
  pool->note = NULL;
  proto_pooled_keep_wire(pool, decoded, len, msg->n_sales);
  return &pool->batch;
}

static int proto_batch_pooled(const Pos__V1__Batch *batch)
{
  return batch && batch->base.descriptor == &proto_pooled_descriptor;
}

void proto_batch_free(Pos__V1__Batch *batch)
{
  if (proto_batch_pooled(batch))
    proto_arena_release(((struct proto_pooled *)(void *)((char *)batch -
                                                         offsetof(struct proto_pooled, batch)))
                            ->chunks);
  else if (batch)
    pos__v1__batch__free_unpacked(batch, NULL);
}

int proto_batch_sale_wire(const Pos__V1__Batch *batch, size_t index, const uint8_t **bytes,
                          size_t *len)
{
  const struct proto_pooled *pool;

  if (!proto_batch_pooled(batch))
    return 0;
  pool = (const struct proto_pooled *)(const void *)((const char *)batch -
                                                      offsetof(struct proto_pooled, batch));
  if (!pool->sale_wire || index >= pool->sale_wire_count)
    return 0;
  *bytes = pool->sale_wire[index];
  *len = pool->sale_wire_len[index];
  return 1;
}

void *proto_batch_alloc(Pos__V1__Batch *batch, size_t size)
{
  struct proto_pooled *pool;

  if (!proto_batch_pooled(batch))
    return malloc(size ? size : 1);
  pool = (struct proto_pooled *)(void *)((char *)batch - offsetof(struct proto_pooled, batch));
  return proto_arena_alloc(&pool->chunks, size ? size : 1);
}

int proto_batch_set_note(Pos__V1__Batch *batch, void *note)
{
  if (!proto_batch_pooled(batch))
    return -1;
  ((struct proto_pooled *)(void *)((char *)batch - offsetof(struct proto_pooled, batch)))->note =
      note;
  return 0;
}

void *proto_batch_note(const Pos__V1__Batch *batch)
{
  if (!proto_batch_pooled(batch))
    return NULL;
  return ((const struct proto_pooled *)(const void *)((const char *)batch -
                                                      offsetof(struct proto_pooled, batch)))
      ->note;
}

int proto_batch_set_string(Pos__V1__Batch *batch, char **field, const char *text)
{
  size_t len = strlen(text);
  char *copy = proto_batch_alloc(batch, len + 1);

  if (!copy)
    return -1;
  memcpy(copy, text, len + 1);
  if (!proto_batch_pooled(batch) && *field && *field != protobuf_c_empty_string)
    free(*field);
  *field = copy;
  return 0;
}

/* Appends `value` as a base-128 varint at out[*pos]. */
static void proto_put_varint(uint8_t *out, size_t *pos, uint64_t value)
{
  while (value >= 0x80) {
    out[(*pos)++] = (uint8_t)(value | 0x80);
    value >>= 7;
  }
  out[(*pos)++] = (uint8_t)value;
}

/* The Sale fields a compact sale leaves out or adds (pos.proto). */
#define PROTO_SALE_BUSINESS_TIME 8u
#define PROTO_SALE_STORE_ID 16u
#define PROTO_SALE_SEQ 17u
#define PROTO_SALE_RECEIVED 18u
#define PROTO_SALE_STEP_FIRST 23u /* business_time_step_ms .. seq_skip */
#define PROTO_SALE_STEP_LAST 25u

/*
 * Writes the canonical field `number` of the restored `sale` at out[*pos],
 * as protobuf-c packs it (nothing for a zero or empty value).
 */
static void proto_put_restored(uint8_t *out, size_t *pos, unsigned number,
                               const Pos__V1__Sale *sale)
{
  uint64_t value = number == PROTO_SALE_BUSINESS_TIME ? (uint64_t)sale->business_time_ms
                   : number == PROTO_SALE_SEQ         ? sale->seq
                                                      : (uint64_t)sale->received_ms;
  size_t len;

  if (number == PROTO_SALE_STORE_ID) {
    len = sale->store_id ? strlen(sale->store_id) : 0;
    if (len == 0)
      return;
    proto_put_varint(out, pos, (uint64_t)number << 3 | 2u);
    proto_put_varint(out, pos, len);
    memcpy(out + *pos, sale->store_id, len);
    *pos += len;
  } else if (value != 0) {
    proto_put_varint(out, pos, (uint64_t)number << 3);
    proto_put_varint(out, pos, value);
  }
}

/*
 * The canonical wire bytes of compact sale wire[0..len) once restored as
 * `sale` says, in `batch`'s arena: the fields as they came but for the
 * compact ones, with business_time_ms, store_id, seq and received_ms put
 * back where protobuf-c packs them (by field number), so that a consumer
 * reads in pos.sales.v1 the bytes a canonical batch would have given.
 * NULL when out of memory.
 */
static const uint8_t *proto_sale_canonical_wire(Pos__V1__Batch *batch, const uint8_t *wire,
                                                size_t len, const Pos__V1__Sale *sale,
                                                size_t *out_len)
{
  static const unsigned restored[] = {PROTO_SALE_BUSINESS_TIME, PROTO_SALE_STORE_ID,
                                      PROTO_SALE_SEQ, PROTO_SALE_RECEIVED};
  size_t store_len = sale->store_id ? strlen(sale->store_id) : 0;
  uint8_t *out = proto_batch_alloc(batch, len + 3 * 12 + 12 + store_len);
  size_t pos = 0, at = 0, next = 0, payload_len;
  const uint8_t *payload;
  uint64_t key;

  if (!out)
    return NULL;
  while (at < len) {
    size_t start = at;
    unsigned number;
    if (proto_varint(wire, len, &at, &key) != 0 ||
        proto_census_skip(wire, len, &at, (unsigned)(key & 7), &payload, &payload_len) != 0)
      return NULL; /* the census walked these bytes already: not reached */
    number = (unsigned)(key >> 3);
    while (next < 4 && restored[next] < number)
      proto_put_restored(out, &pos, restored[next++], sale);
    if (number == PROTO_SALE_BUSINESS_TIME || number == PROTO_SALE_STORE_ID ||
        number == PROTO_SALE_SEQ || number == PROTO_SALE_RECEIVED ||
        (number >= PROTO_SALE_STEP_FIRST && number <= PROTO_SALE_STEP_LAST))
      continue;
    memcpy(out + pos, wire + start, at - start);
    pos += at - start;
  }
  while (next < 4)
    proto_put_restored(out, &pos, restored[next++], sale);
  *out_len = pos;
  return out;
}

/*
 * Turns the compact sales of `batch` (envelope.compact_sales) back into
 * canonical ones (codec.h, proto_batch_unpack), their wire bytes too when
 * the batch is pooled; refuses a sale that mixes the encodings. Returns 0,
 * PROTO_EDECODE or PROTO_ENOMEM with `err` saying what is wrong.
 */
static int proto_batch_restore(Pos__V1__Batch *batch, char *err, size_t err_size)
{
  Pos__V1__BatchEnvelope *env = batch->envelope;
  struct proto_pooled *pool = NULL;
  uint64_t time = (uint64_t)env->created_ms, seq = env->first_seq - 1;

  if (proto_batch_pooled(batch))
    pool = (struct proto_pooled *)(void *)((char *)batch - offsetof(struct proto_pooled, batch));
  for (size_t i = 0; i < batch->n_sales; i++) {
    Pos__V1__Sale *sale = batch->sales[i];
    if (!env->compact_sales) {
      if (sale->business_time_step_ms || sale->received_after_business_ms || sale->seq_skip) {
        snprintf(err, err_size, "sales[%zu] carries a field of the compact encoding "
                 "(business_time_step_ms, received_after_business_ms, seq_skip) but the "
                 "envelope does not say compact_sales", i);
        return PROTO_EDECODE;
      }
      continue;
    }
    if (sale->business_time_ms || sale->seq || sale->received_ms) {
      snprintf(err, err_size, "sales[%zu] is compact (envelope.compact_sales) but carries "
               "business_time_ms, seq or received_ms, which the compact encoding leaves out", i);
      return PROTO_EDECODE;
    }
    /* Unsigned: the inverse of proto_batch_compact's differences, exactly. */
    time += (uint64_t)sale->business_time_step_ms;
    seq += 1 + sale->seq_skip;
    sale->business_time_ms = (int64_t)time;
    sale->received_ms = (int64_t)(time + (uint64_t)sale->received_after_business_ms);
    sale->seq = seq;
    sale->business_time_step_ms = 0;
    sale->received_after_business_ms = 0;
    sale->seq_skip = 0;
    if ((!sale->store_id || !sale->store_id[0]) && env->store_id && env->store_id[0] &&
        proto_batch_set_string(batch, &sale->store_id, env->store_id)) {
      snprintf(err, err_size, "out of memory restoring compact sales");
      return PROTO_ENOMEM;
    }
    if (pool && pool->sale_wire && i < pool->sale_wire_count) {
      const uint8_t *canonical = proto_sale_canonical_wire(
          batch, pool->sale_wire[i], pool->sale_wire_len[i], sale, &pool->sale_wire_len[i]);
      if (canonical)
        pool->sale_wire[i] = canonical;
      else
        pool->sale_wire = NULL; /* every sale is packed again instead */
    }
  }
  /* Canonical now, all of it: packed again, it is a canonical batch. */
  env->compact_sales = 0;
  return PROTO_OK;
}

static int proto_batch_unpack_as(const uint8_t *body, size_t body_len,
                                 const struct proto_limits *limits, int pooled,
                                 Pos__V1__Batch **batch, char *err, size_t err_size)
{
  struct proto_buffer *buffer = NULL;
  uint8_t *decoded;
  size_t decoded_len = 0;
  Pos__V1__Batch *msg = NULL;
  const Pos__V1__BatchEnvelope *env;
  struct proto_census census = {0};
  uint32_t dict_id = PROTO_ZSTD_DICT_NONE;
  int rc;

  if (body_len > limits->max_compressed) {
    snprintf(err, err_size, "body of %zu bytes is over the limit of %zu bytes; split the batch",
             body_len, limits->max_compressed);
    return PROTO_ETOOBIG;
  }
  buffer = proto_decoded_take();
  rc = buffer ? proto_zstd_decompress_buffer(body, body_len, limits->max_decoded, buffer,
                                             &decoded_len, &dict_id)
              : PROTO_ENOMEM;
  if (rc == PROTO_EDICT) {
    snprintf(err, err_size, "batch compressed with zstd dictionary %" PRIu32 ", which this "
             "collector does not know: upgrade the collector", dict_id);
    proto_decoded_give(buffer);
    return rc;
  }
  if (rc == PROTO_EBOMB) {
    snprintf(err, err_size, "body decompresses to more than %zu bytes", limits->max_decoded);
    proto_decoded_give(buffer);
    return rc;
  }
  if (rc) {
    snprintf(err, err_size, "%s: expected complete zstd frames", proto_strerror(rc));
    proto_decoded_give(buffer);
    return rc;
  }
  decoded = buffer->data;
  census.limits = limits;
  census.max_objects = limits->max_sales * PROTO_OBJECTS_PER_SALE;
  if (limits->max_sales > SIZE_MAX / PROTO_OBJECTS_PER_SALE ||
      census.max_objects < PROTO_MAX_OBJECTS_MIN)
    census.max_objects = limits->max_sales > SIZE_MAX / PROTO_OBJECTS_PER_SALE
                             ? SIZE_MAX
                             : PROTO_MAX_OBJECTS_MIN;
  census.err = err;
  census.err_size = err_size;
  pthread_once(&proto_census_fields_once, proto_census_fields_init);
  rc = proto_census_walk(&census, &pos__v1__batch__descriptor, decoded, decoded_len, 0, NULL);
  if (rc != PROTO_OK) {
    proto_decoded_give(buffer);
    return rc;
  }
  msg = proto_batch_decode(decoded, decoded_len, pooled);
  proto_decoded_give(buffer);
  if (!msg) {
    snprintf(err, err_size, "decompressed body is not a pos.v1.Batch protobuf");
    return PROTO_EDECODE;
  }
  env = msg->envelope;
  rc = PROTO_EENVELOPE;
  if (!env)
    snprintf(err, err_size, "batch has no envelope");
  else if (env->journal_id.len != 16)
    snprintf(err, err_size, "envelope.journal_id must be 16 bytes, not %zu",
             env->journal_id.len);
  else if (env->batch_seq == 0)
    snprintf(err, err_size, "envelope.batch_seq must start at 1");
  else if (!env->store_id || !env->store_id[0])
    snprintf(err, err_size, "envelope.store_id is empty");
  else if (env->kind != POS__V1__BATCH_KIND__BATCH_KIND_LIVE &&
           env->kind != POS__V1__BATCH_KIND__BATCH_KIND_REPLAY)
    snprintf(err, err_size, "envelope.kind must be live or replay");
  else if (env->kind == POS__V1__BATCH_KIND__BATCH_KIND_REPLAY &&
           (!env->resync_id || !env->resync_id[0]))
    snprintf(err, err_size, "a replay batch needs envelope.resync_id");
  else if (env->zstd_dictionary != PROTO_ZSTD_DICT_NONE && env->zstd_dictionary != dict_id)
    snprintf(err, err_size, "envelope.zstd_dictionary is %" PRIu32 " but the body's zstd "
             "frames name dictionary %" PRIu32 " (0: none)", env->zstd_dictionary, dict_id);
  else if (msg->n_sales > limits->max_sales)
    snprintf(err, err_size, "batch holds %zu sales, over the limit of %zu", msg->n_sales,
             limits->max_sales);
  else
    rc = proto_batch_restore(msg, err, err_size);
  if (rc) {
    proto_batch_free(msg);
    return rc;
  }
  *batch = msg;
  return PROTO_OK;
}

int proto_batch_unpack(const uint8_t *body, size_t body_len, const struct proto_limits *limits,
                       Pos__V1__Batch **batch, char *err, size_t err_size)
{
  return proto_batch_unpack_as(body, body_len, limits, 0, batch, err, err_size);
}

int proto_batch_unpack_pooled(const uint8_t *body, size_t body_len,
                              const struct proto_limits *limits, Pos__V1__Batch **batch,
                              char *err, size_t err_size)
{
  return proto_batch_unpack_as(body, body_len, limits, 1, batch, err, err_size);
}

static int proto_text_ok(const char *text) { return text && text[0] && strlen(text) <= 64; }

int proto_sale_check(const Pos__V1__Sale *sale, char *field, size_t field_size, char *why,
                     size_t why_size)
{
  int64_t lines_sum = 0, payments_sum = 0;

#define PROTO_REJECT(f, ...)                                                                   \
  do {                                                                                         \
    snprintf(field, field_size, "%s", f);                                                      \
    snprintf(why, why_size, __VA_ARGS__);                                                      \
    return -1;                                                                                 \
  } while (0)

  if (!proto_text_ok(sale->sale_id))
    PROTO_REJECT("sale_id", "sale_id must be 1-64 characters");
  if (!proto_text_ok(sale->terminal_id))
    PROTO_REJECT("terminal_id", "terminal_id must be 1-64 characters");
  if (sale->kind < POS__V1__SALE_KIND__SALE_KIND_SALE ||
      sale->kind > POS__V1__SALE_KIND__SALE_KIND_VOID)
    PROTO_REJECT("kind", "kind %d is not sale, refund or void", (int)sale->kind);
  if (sale->kind != POS__V1__SALE_KIND__SALE_KIND_SALE && !proto_text_ok(sale->original_sale_id))
    PROTO_REJECT("original_sale_id", "a refund or void must name its original sale");
  if (sale->channel < POS__V1__CHANNEL__CHANNEL_POS ||
      sale->channel > POS__V1__CHANNEL__CHANNEL_PICKUP)
    PROTO_REJECT("channel", "channel %d is not pos, online, delivery or pickup",
                 (int)sale->channel);
  if (!sale->currency || strlen(sale->currency) != 3)
    PROTO_REJECT("currency", "currency must be an ISO 4217 code");
  if (sale->currency_exponent > 4)
    PROTO_REJECT("currency_exponent", "currency_exponent %u is not 0-4",
                 sale->currency_exponent);
  if (sale->utc_offset_minutes < -18 * 60 || sale->utc_offset_minutes > 18 * 60)
    PROTO_REJECT("utc_offset_minutes", "UTC offset %d minutes is beyond +-18h",
                 (int)sale->utc_offset_minutes);
  for (size_t i = 0; i < sale->n_carried_from; i++) {
    char where[48];
    snprintf(where, sizeof(where), "carried_from[%zu]", i);
    if (sale->carried_from[i]->journal_id.len != 16 || sale->carried_from[i]->seq == 0)
      PROTO_REJECT(where, "a journal a sale was carried over from needs a 16-byte journal_id "
                          "and a seq above 0");
  }
  if (sale->n_lines == 0 || sale->n_lines > 500)
    PROTO_REJECT("lines", "a sale needs 1 to 500 lines, not %zu", sale->n_lines);
  for (size_t i = 0; i < sale->n_lines; i++) {
    const Pos__V1__SaleLine *line = sale->lines[i];
    char where[48];
    int64_t gross, net;
    if (!proto_text_ok(line->sku)) {
      snprintf(where, sizeof(where), "lines[%zu].sku", i);
      PROTO_REJECT(where, "sku must be 1-64 characters");
    }
    if (line->quantity <= 0) {
      snprintf(where, sizeof(where), "lines[%zu].quantity", i);
      PROTO_REJECT(where, "quantity must be positive, not %" PRId64, line->quantity);
    }
    if (line->unit_price < 0 || line->discount < 0 || line->tax < 0) {
      snprintf(where, sizeof(where), "lines[%zu]", i);
      PROTO_REJECT(where, "unit_price, discount and tax must not be negative");
    }
    if (__builtin_mul_overflow(line->quantity, line->unit_price, &gross) ||
        __builtin_sub_overflow(gross, line->discount, &net) ||
        __builtin_add_overflow(net, line->tax, &net) ||
        __builtin_add_overflow(lines_sum, net, &lines_sum)) {
      snprintf(where, sizeof(where), "lines[%zu]", i);
      PROTO_REJECT(where, "line amounts overflow");
    }
    if (line->discount > gross) {
      snprintf(where, sizeof(where), "lines[%zu].discount", i);
      PROTO_REJECT(where, "discount is larger than quantity * unit_price");
    }
  }
  if (lines_sum != sale->total)
    PROTO_REJECT("total", "total %" PRId64 " is not the lines' sum %" PRId64, sale->total,
                 lines_sum);
  if (sale->n_payments == 0 && sale->total != 0)
    PROTO_REJECT("payments", "a sale with a total needs at least one payment");
  for (size_t i = 0; i < sale->n_payments; i++) {
    if (sale->payments[i]->amount <= 0 ||
        __builtin_add_overflow(payments_sum, sale->payments[i]->amount, &payments_sum)) {
      char where[48];
      snprintf(where, sizeof(where), "payments[%zu].amount", i);
      PROTO_REJECT(where, "payment amounts must be positive and not overflow");
    }
  }
  if (payments_sum != sale->total)
    PROTO_REJECT("payments", "payments add up to %" PRId64 ", total is %" PRId64, payments_sum,
                 sale->total);
#undef PROTO_REJECT
  return 0;
}

char *proto_money_format(int64_t minor, unsigned exponent, char *out, size_t out_size)
{
  /* Negated in unsigned arithmetic so that INT64_MIN has a magnitude too. */
  uint64_t magnitude = minor < 0 ? (uint64_t)0 - (uint64_t)minor : (uint64_t)minor;
  uint64_t scale = 1;

  /*
   * 10^18 is the largest power of ten in an int64: with more decimals the
   * scale would wrap (wrong digits) or become 0 (a division by zero). Such an
   * exponent only reaches us from a sale the collector refuses (0-4 is
   * allowed), and that sale is what one reads the dead-letter topic for: show
   * its minor units as they are, marked so nobody mistakes them for an amount.
   */
  if (exponent > PROTO_MONEY_MAX_EXPONENT) {
    snprintf(out, out_size, "raw:%" PRId64 ",exp:%u", minor, exponent);
    return out;
  }
  for (unsigned i = 0; i < exponent; i++)
    scale *= 10;
  if (exponent == 0)
    snprintf(out, out_size, "%s%" PRIu64, minor < 0 ? "-" : "", magnitude);
  else
    snprintf(out, out_size, "%s%" PRIu64 ".%0*" PRIu64, minor < 0 ? "-" : "",
             magnitude / scale, (int)exponent, magnitude % scale);
  return out;
}

void proto_journal_id_format(const uint8_t journal_id[16], char out[33])
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < 16; i++) {
    out[2 * i] = digits[journal_id[i] >> 4];
    out[2 * i + 1] = digits[journal_id[i] & 15];
  }
  out[32] = '\0';
}

static int proto_hex_digit(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int proto_journal_id_parse(const char *hex, uint8_t journal_id[16])
{
  uint8_t bytes[16];
  if (!hex || strlen(hex) != 32)
    return -1;
  for (size_t i = 0; i < 16; i++) {
    int high = proto_hex_digit(hex[2 * i]), low = proto_hex_digit(hex[2 * i + 1]);
    if (high < 0 || low < 0)
      return -1;
    bytes[i] = (uint8_t)(high << 4 | low);
  }
  memcpy(journal_id, bytes, sizeof(bytes));
  return 0;
}
