/*
 * codec.h - what both programs do with the wire format: pack a batch into a
 * zstd-compressed protobuf body, and unpack one within limits, so that a
 * garbage body, a truncated frame or a decompression bomb is refused with a
 * distinct error before it costs memory.
 */
#ifndef PROTO_CODEC_H
#define PROTO_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "pos/v1/pos.pb-c.h"

enum proto_error {
  PROTO_OK = 0,
  PROTO_ENOMEM = -1,     /* out of memory */
  PROTO_ETOOBIG = -2,    /* the compressed body is over max_compressed */
  PROTO_EBOMB = -3,      /* it decompresses to more than max_decoded */
  PROTO_EZSTD = -4,      /* not a whole, valid zstd frame */
  PROTO_EDECODE = -5,    /* not a valid protobuf message of the expected type */
  PROTO_EENVELOPE = -6,  /* decodes, but the envelope lacks what every batch needs */
  PROTO_ETOOMANY = -7,   /* holds more objects than a limit allows (sales, lines, ...) */
  PROTO_EDICT = -8,      /* compressed with a zstd dictionary this build does not know */
};

/* A short description of `code`. */
const char *proto_strerror(int code);

struct proto_limits {
  size_t max_compressed; /* bytes on the wire */
  size_t max_decoded;    /* bytes after zstd */
  size_t max_sales;      /* sales in one batch */
};

/*
 * What a decoded batch may hold, checked on the wire bytes BEFORE protobuf-c
 * allocates anything: a body of tiny objects (an empty sale line is 2 bytes)
 * would otherwise cost protobuf-c about 80 bytes of memory per wire byte.
 * Lines and payments per sale are the agent's own bounds (SALE_LINES_MAX,
 * SALE_PAYMENTS_MAX); objects are messages, entries of repeated fields and
 * fields the reader does not know, counted over the whole batch, so that
 * max_sales sales of PROTO_OBJECTS_PER_SALE objects each always fit.
 */
#define PROTO_MAX_LINES_PER_SALE 500u
#define PROTO_MAX_PAYMENTS_PER_SALE 50u
#define PROTO_MAX_CARRIED_PER_SALE 8u /* journals a sale was carried over from */
#define PROTO_MAX_DELTAS_PER_BATCH 100000u
#define PROTO_OBJECTS_PER_SALE 16u
#define PROTO_MAX_OBJECTS_MIN 65536u

/* Defaults both sides agree on unless the collector says otherwise (BatchAck.limits). */
#define PROTO_DEFAULT_MAX_COMPRESSED (4u * 1024 * 1024)
#define PROTO_DEFAULT_MAX_DECODED (32u * 1024 * 1024)
#define PROTO_DEFAULT_MAX_SALES 20000u

/*
 * zstd dictionaries trained on sales (proto/dict/README.md), embedded in
 * both programs. An id names one dictionary's bytes for ever: a new
 * dictionary gets a new id, and the old ones stay known. The id is the
 * zstd frame header's Dictionary_ID, which the decoder reads to pick the
 * dictionary (and BatchEnvelope.zstd_dictionary says it again, inside).
 * Ids are in the range zstd leaves to private dictionaries (32768 to
 * 2^31 - 1): 0x504F53nn, "POS" and a version.
 */
#define PROTO_ZSTD_DICT_NONE 0u
#define PROTO_ZSTD_DICT_SALES_1 0x504F5301u /* 1347375873, proto/dict/sales-1.zdict */
/* 1347375874, proto/dict/sales-2.zdict, trained on compact sales: a body
 * compressed with it holds its sales in the compact encoding (pos.proto,
 * BatchEnvelope.compact_sales), so a collector that cannot restore them
 * cannot decompress it either, and refuses it (400) before it reads a sale. */
#define PROTO_ZSTD_DICT_SALES_2 0x504F5302u

/* Whether a body compressed with dictionary `dict_id` carries compact sales. Pure. */
int proto_zstd_dictionary_compacts(uint32_t dict_id);

/*
 * The ids of the dictionaries this build compresses and decompresses with,
 * oldest first; *count is set to how many. Static storage: never freed or
 * written. Any thread.
 */
const uint32_t *proto_zstd_dictionaries_known(size_t *count);

/*
 * Sets limits->zstd_dictionaries (and its count) to the dictionaries this
 * build knows: what the collector puts in every BatchAck's Limits so that
 * agents start compressing with them. The array is static storage, borrowed
 * by `limits`: never freed with it. Any thread.
 */
void proto_limits_advertise_dictionaries(Pos__V1__Limits *limits);

/*
 * The dictionary a sender uses with a receiver that lists `offered`
 * (Limits.zstd_dictionaries): the newest id both know, or
 * PROTO_ZSTD_DICT_NONE when none is shared (an older collector lists none).
 */
uint32_t proto_zstd_dictionary_choose(const uint32_t *offered, size_t count);

/*
 * The dictionary the first data frame of `body` names (its header's
 * Dictionary_ID), or PROTO_ZSTD_DICT_NONE when it names none or `body` is
 * not zstd. Any thread.
 */
uint32_t proto_zstd_dictionary_of(const uint8_t *body, size_t body_len);

/*
 * proto_batch_pack with the zstd dictionary `dict_id` (PROTO_ZSTD_DICT_NONE:
 * exactly proto_batch_pack). The frame names the dictionary in its header
 * and declares its content size; the dictionary is loaded for each batch.
 * With a dictionary that compacts (proto_zstd_dictionary_compacts), the
 * sales go in the compact encoding (proto_batch_serialize); `batch` itself
 * is never changed. Returns 0, PROTO_EDICT for an id this build does not
 * know, PROTO_EENVELOPE (compact sales need an envelope), PROTO_ENOMEM or
 * PROTO_EZSTD (a level zstd refuses). Deterministic, like proto_batch_pack.
 * Any thread. The envelope's zstd_dictionary is the caller's to set.
 */
int proto_batch_pack_dict(const Pos__V1__Batch *batch, int zstd_level, uint32_t dict_id,
                          uint8_t **body, size_t *body_len);

/*
 * The protobuf bytes of `batch` (not compressed), its sales canonical
 * (compact 0) or in the compact encoding (compact 1: the envelope says
 * compact_sales; pos.proto, Sale.business_time_step_ms), made on copies:
 * `batch` is never changed. Returns 0 with *out (caller frees) and
 * *out_len, PROTO_EENVELOPE (compact without an envelope) or PROTO_ENOMEM.
 * Compact bytes must only ever be sent compressed with a dictionary that
 * compacts (proto_batch_pack_dict does): a tool writes them for training
 * one. Any thread.
 */
int proto_batch_serialize(const Pos__V1__Batch *batch, int compact, uint8_t **out,
                          size_t *out_len);

/*
 * Serialises and compresses `batch`. On success returns 0 and sets *body
 * (caller frees with free()) and *body_len. Deterministic: the same batch
 * gives the same bytes, so a sealed batch can be resent byte for byte.
 */
int proto_batch_pack(const Pos__V1__Batch *batch, int zstd_level, uint8_t **body,
                     size_t *body_len);

/*
 * Decompresses (bounded; every zstd frame of the body, RFC 8878) and
 * decodes a batch body, and checks its envelope. Before protobuf-c
 * unpacks, a pass over the wire bytes counts what the batch holds, so that
 * over max_sales sales, PROTO_MAX_LINES_PER_SALE lines or
 * PROTO_MAX_PAYMENTS_PER_SALE payments in a sale, PROTO_MAX_DELTAS_PER_BATCH
 * inventory deltas, or more objects in all than max(max_sales *
 * PROTO_OBJECTS_PER_SALE, PROTO_MAX_OBJECTS_MIN) is refused with
 * PROTO_ETOOMANY and `err` naming the limit and where, having cost no more
 * memory than the decompressed bytes. The same pass refuses, with
 * PROTO_EDECODE and `err` naming the sale, a field number protobuf does not
 * allow (0, or above 2^29 - 1) that protobuf-c would take in and pack again
 * into bytes no consumer can decode, and a string that is not UTF-8 or
 * holds a NUL byte (other readers refuse it; protobuf-c would cut it);
 * valid unknown fields are kept (they count as objects). A body
 * compressed with a dictionary (its frames' Dictionary_ID) is decompressed
 * with it when this build knows it, else refused with PROTO_EDICT and `err`
 * naming the id; the frames of one body must all name the same dictionary
 * (or none), and a BatchEnvelope.zstd_dictionary other than 0 must be the
 * frames' (PROTO_EENVELOPE). Compact sales (BatchEnvelope.compact_sales)
 * come back canonical: business_time_ms, seq, received_ms and an empty
 * store_id restored, the compact fields and envelope.compact_sales
 * cleared (packed again, it is a canonical batch), and for a pooled batch
 * their wire bytes (proto_batch_sale_wire) those of the canonical sale; a
 * compact sale that carries business_time_ms, seq or received_ms, or a
 * canonical one that carries a compact field, is refused (PROTO_EDECODE).
 * On success returns 0 and sets *batch
 * (caller frees with pos__v1__batch__free_unpacked(batch, NULL)). On
 * failure returns a proto_error and writes what was wrong into `err`.
 */
int proto_batch_unpack(const uint8_t *body, size_t body_len, const struct proto_limits *limits,
                       Pos__V1__Batch **batch, char *err, size_t err_size);

/*
 * proto_batch_unpack, with everything the batch holds in one arena (a few
 * blocks, made and freed at once, instead of an allocation per string,
 * message and list): for the collector's batches. Free it with
 * proto_batch_free, never pos__v1__batch__free_unpacked (which asserts);
 * replace a string in it with proto_batch_set_string and give it new
 * memory with proto_batch_alloc, never free() what it holds. Any thread;
 * the batch belongs to the caller.
 */
int proto_batch_unpack_pooled(const uint8_t *body, size_t body_len,
                              const struct proto_limits *limits, Pos__V1__Batch **batch,
                              char *err, size_t err_size);

/*
 * Frees a batch of proto_batch_unpack_pooled (its arena) or any other
 * pos.v1.Batch whose every part is malloc'd (pos__v1__batch__free_unpacked).
 * NULL is ignored.
 */
void proto_batch_free(Pos__V1__Batch *batch);

/*
 * The bytes of batch->sales[index] as the sender encoded them (a
 * pos.v1.Sale, unknown fields and all), living as long as `batch`: 1 with
 * *bytes and *len for a pooled batch, 0 for any other (pack the sale). They
 * say what the unpacked sale said when it was unpacked: a caller that
 * changes the sale packs it again instead.
 */
int proto_batch_sale_wire(const Pos__V1__Batch *batch, size_t index, const uint8_t **bytes,
                          size_t *len);

/*
 * `size` bytes that live as long as `batch` (its arena when pooled, else
 * malloc'd: then the caller hangs them in the batch, whose free frees
 * them). NULL when out of memory.
 */
void *proto_batch_alloc(Pos__V1__Batch *batch, size_t size);

/*
 * A note the caller hangs on a pooled batch: what it worked out about the
 * batch on a worker thread (in memory of proto_batch_alloc, so it goes with
 * the batch), for the thread that takes the batch next. Returns 0, or -1
 * for a batch that is not pooled (nothing kept). proto_batch_note reads it
 * back: NULL when none was set or the batch is not pooled.
 */
int proto_batch_set_note(Pos__V1__Batch *batch, void *note);
void *proto_batch_note(const Pos__V1__Batch *batch);

/*
 * Sets the string *field of a message inside `batch` to a copy of `text`,
 * freeing the old one when the batch is not pooled. Returns 0, or -1 when
 * out of memory (*field unchanged).
 */
int proto_batch_set_string(Pos__V1__Batch *batch, char **field, const char *text);

/*
 * zstd-decompresses `in`, one frame or several concatenated (skippable
 * frames are skipped), into a new buffer of at most `max_out` bytes in all,
 * with the dictionary its frames name (PROTO_ZSTD_DICT_SALES_1, ...).
 * Returns 0 with *out (caller frees) and *out_len, or PROTO_EZSTD (not
 * zstd, truncated, trailing bytes that are not a frame, or frames naming
 * different dictionaries), PROTO_EDICT (a dictionary this build does not
 * know), PROTO_EBOMB or PROTO_ENOMEM.
 */
int proto_zstd_decompress(const uint8_t *in, size_t in_len, size_t max_out, uint8_t **out,
                          size_t *out_len);

/*
 * Whether the decoder keeps its zstd context and a decoded body's buffer (up
 * to 4 MiB) between bodies, for the next body on any thread. Off by default:
 * the collector turns it on (a batch every few milliseconds); the agent,
 * which decodes one batch per push, keeps nothing while idle. Any thread.
 */
void proto_codec_keep_between_bodies(int keep);

/*
 * Checks one sale of a decoded batch the way the collector must before it
 * produces it: ids present, kind and channel known, money adding up
 * (total = sum(qty*unit_price - discount + tax), payments = total),
 * quantities positive, no overflow. Returns 0, or -1 with `field`
 * ("lines[2].quantity") and `why` set.
 */
int proto_sale_check(const Pos__V1__Sale *sale, char *field, size_t field_size, char *why,
                     size_t why_size);

/* A journal_id (16 bytes on the wire) as 32 lowercase hex digits, NUL-terminated. */
void proto_journal_id_format(const uint8_t journal_id[16], char out[33]);

/* Parses exactly 32 hex digits (either case) into 16 bytes. Returns 0 or -1. */
int proto_journal_id_parse(const char *hex, uint8_t journal_id[16]);

/*
 * Formats `minor` units of a currency with `exponent` decimals as a decimal
 * string ("-12.50", "1500" for JPY) into `out`, for any amount and any
 * exponent up to PROTO_MONEY_MAX_EXPONENT. A larger exponent (only a sale
 * the collector refuses has one) gives the minor units unscaled, marked:
 * "raw:1250,exp:96". Never longer than PROTO_MONEY_TEXT_MAX bytes with the
 * NUL; a smaller `out` gets a truncated, terminated string. Returns `out`.
 */
#define PROTO_MONEY_MAX_EXPONENT 18u /* 10^18: the largest power of ten in an int64 */
#define PROTO_MONEY_TEXT_MAX 40u     /* "raw:-9223372036854775808,exp:4294967295" */
char *proto_money_format(int64_t minor, unsigned exponent, char *out, size_t out_size);

#endif
