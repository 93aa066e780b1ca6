/*
 * sale.h - a validated sale, as the agent holds it between the POS API and
 * the journal. Money is integer minor units of `currency` (10^exponent per
 * major unit); nothing here is ever a float.
 */
#ifndef AGENT_SALE_H
#define AGENT_SALE_H

#include <stddef.h>
#include <stdint.h>

#define SALE_ID_MAX 64         /* sale_id, original_sale_id: 1-64 of [A-Za-z0-9._:-] */
#define SALE_TEXT_MAX 64       /* terminal, cashier, partner, sku, promo, method */
#define SALE_LINES_MAX 500
#define SALE_PAYMENTS_MAX 50
#define SALE_TIME_TEXT_MAX 40

enum sale_kind { SALE_KIND_SALE = 1, SALE_KIND_REFUND = 2, SALE_KIND_VOID = 3 };
enum sale_channel {
  SALE_CHANNEL_POS = 1,
  SALE_CHANNEL_ONLINE = 2,
  SALE_CHANNEL_DELIVERY = 3,
  SALE_CHANNEL_PICKUP = 4
};

struct sale_line {
  char sku[SALE_TEXT_MAX + 1];
  int64_t qty;
  int64_t unit_price; /* minor units */
  int64_t discount;   /* minor units, whole line */
  char promo_id[SALE_TEXT_MAX + 1];
  int64_t tax;        /* minor units, whole line */
};

struct sale_payment {
  char method[SALE_TEXT_MAX + 1];
  int64_t amount;     /* minor units */
};

struct sale {
  char sale_id[SALE_ID_MAX + 1];
  enum sale_kind kind;
  char original_sale_id[SALE_ID_MAX + 1]; /* "" unless refund/void */
  char terminal_id[SALE_TEXT_MAX + 1];
  char cashier_id[SALE_TEXT_MAX + 1];     /* "" = not given */
  enum sale_channel channel;
  char delivery_partner[SALE_TEXT_MAX + 1];
  char business_time[SALE_TIME_TEXT_MAX + 1]; /* as the POS sent it */
  int64_t business_time_ms;                   /* UTC epoch ms */
  int32_t utc_offset_minutes;
  char currency[4];
  unsigned currency_exponent;
  size_t line_count;
  struct sale_line *lines;       /* owned; line_count entries */
  size_t payment_count;
  struct sale_payment *payments; /* owned; payment_count entries */
  int64_t total;                 /* minor units */
};

/* Frees what `sale` owns (lines, payments) and zeroes it. `sale` may be NULL. */
void sale_clear(struct sale *sale);

/* Frees an array of `count` sales made by sale_json_parse and the array. */
void sale_array_free(struct sale *sales, size_t count);

/* Canonical names ("sale", "refund", "void"; "pos", "online", ...). */
const char *sale_kind_name(enum sale_kind kind);
const char *sale_channel_name(enum sale_channel channel);

/*
 * SHA-256 of the sale's content (what the POS sent, canonicalised: the
 * protobuf encoding of pos.v1.Sale with the agent's fields unset), so that a
 * retry with other whitespace or key order is recognised as the same sale.
 * Returns 0, or -1 if memory ran out.
 */
int sale_content_hash(const struct sale *sale, uint8_t hash[32]);

/*
 * The canonical RFC 3339 text of a business time: the local time at
 * `offset_min` of `ms` (UTC epoch ms), "YYYY-MM-DDTHH:MM:SS", then ".mmm"
 * only when ms % 1000 != 0, then "Z" for offset 0 or "+hh:mm"/"-hh:mm":
 * "2026-03-01T12:00:00+01:00", "2026-03-01T11:00:00.250Z". It is what the
 * POS contract's examples and pos-load send, so a slim journal row
 * (journal.row_format = slim) stores business_time as '' when the POS's
 * text is exactly this, and readers print it again (journal_batch.c). A
 * text it cannot parse back byte for byte is kept as sent. Writes at most
 * `size` bytes (NUL included; SALE_TIME_TEXT_MAX + 1 is ample) and returns
 * the length, or -1 when `size` is too small or the year is outside
 * 0000-9999 (nothing a POS can send). Pure; any thread.
 */
int sale_time_format(int64_t ms, int32_t offset_min, char *buf, size_t size);

/*
 * The compact form of a sale's lines and payments that a journal row holds
 * in place of their JSON (journal.compact_rows): pos.v1.Sale with only its
 * lines and payments set, as protobuf-c packs it, about a third of the
 * JSON's bytes. sale_items_pack writes it into *buf (grown as needed, *cap
 * its size; the caller frees it once) and sets *len: 0, or -1 out of memory.
 * sale_items_unpack sets the lines and payments of `sale` (which owns them
 * after, even on failure: sale_clear) from such bytes: 0, or -1 when they
 * are not what sale_items_pack writes (no line, too many, a text too long
 * or missing) or memory ran out. Pure; any thread.
 */
int sale_items_pack(const struct sale *sale, uint8_t **buf, size_t *cap, size_t *len);
int sale_items_unpack(const uint8_t *data, size_t len, struct sale *sale);

#endif
