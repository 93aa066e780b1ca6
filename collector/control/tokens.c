/*
 * tokens.c - head office's one-time enrolment tokens (control.h): issued for
 * one device of one store, kept in pos.control.v1 ("<store>/enrol-token/<id>",
 * the secret's SHA-256 only), used once by an EST enrolment.
 *
 * Single use holds across requests and restarts: a use is marked in Kafka
 * before the certificate is answered, and while that mark is in flight the
 * token is refused to any other request (409). A mark Kafka does not take
 * leaves the token usable, and the device gets no certificate: it retries.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <mbedtls/sha256.h>

#include "control/control_int.h"
#include "platform/clock.h"
#include "server/identity.h"
#include "platform/log.h"

/* A token's record on its way to Kafka. */
struct control_token_op {
  control *c;
  struct control_token *token; /* in the map; removed again if an issue fails */
  struct control_token before; /* a use: what to go back to if Kafka does not take it */
  int issue;
  char text[CONTROL_TOKEN_TEXT_MAX + 1];
  control_token_fn done;
  void *arg;
};

static void control_token_hash(const char *secret, unsigned char out[32])
{
  mbedtls_sha256_ret((const unsigned char *)secret, strlen(secret), out, 0);
}

/* Compares without stopping at the first difference: the time a wrong
 * secret takes says nothing of how much of it was right. */
static int control_token_same(const unsigned char *a, const unsigned char *b, size_t len)
{
  unsigned char diff = 0;
  for (size_t i = 0; i < len; i++)
    diff |= a[i] ^ b[i];
  return diff == 0;
}

static int control_token_random_hex(char *out, size_t hex_len)
{
  unsigned char bytes[32];
  static const char digits[] = "0123456789abcdef";

  if (hex_len / 2 > sizeof(bytes) || getrandom(bytes, hex_len / 2, 0) != (ssize_t)(hex_len / 2))
    return -1;
  for (size_t i = 0; i < hex_len / 2; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  out[hex_len] = '\0';
  return 0;
}

static struct control_token *control_token_find(const struct control_map *map, const char *id)
{
  for (struct control_token *t = map->tokens; t; t = t->next) {
    if (strcmp(t->token_id, id) == 0)
      return t;
  }
  return NULL;
}

static void control_token_unlink(struct control_map *map, struct control_token *token)
{
  for (struct control_token **p = &map->tokens; *p; p = &(*p)->next) {
    if (*p == token) {
      *p = token->next;
      map->token_count--;
      return;
    }
  }
}

int control__token_put(struct control_map *map, const char *token_id,
                       const Pos__V1__EnrolToken *proto)
{
  struct control_token *token = control_token_find(map, token_id);

  if (!proto) {
    if (token) {
      control_token_unlink(map, token);
      free(token);
    }
    return 0;
  }
  if (strcmp(proto->token_id, token_id) != 0 || strlen(token_id) != CONTROL_TOKEN_ID_HEX ||
      !identity_id_valid(proto->store_id, strlen(proto->store_id)) || !identity_id_valid(proto->device_id, strlen(proto->device_id)) ||
      proto->secret_sha256.len != 32)
    return 0; /* not a record this collector wrote: ignored */
  if (!token) {
    if (map->token_count >= CONTROL_MAX_TOKENS || !(token = calloc(1, sizeof(*token))))
      return -1;
    token->next = map->tokens;
    map->tokens = token;
    map->token_count++;
  }
  snprintf(token->token_id, sizeof(token->token_id), "%s", proto->token_id);
  snprintf(token->store_id, sizeof(token->store_id), "%s", proto->store_id);
  snprintf(token->device_id, sizeof(token->device_id), "%s", proto->device_id);
  memcpy(token->secret_sha256, proto->secret_sha256.data, 32);
  token->issued_ms = proto->issued_ms;
  token->expires_ms = proto->expires_ms;
  token->used_ms = proto->used_ms;
  snprintf(token->issued_by, sizeof(token->issued_by), "%s", proto->issued_by);
  snprintf(token->used_by, sizeof(token->used_by), "%s", proto->used_by);
  snprintf(token->certificate_serial, sizeof(token->certificate_serial), "%s",
           proto->certificate_serial);
  if (proto->public_key_sha256.len == 32)
    memcpy(token->public_key_sha256, proto->public_key_sha256.data, 32);
  return 0;
}

void control__tokens_free(struct control_map *map)
{
  while (map->tokens) {
    struct control_token *next = map->tokens->next;
    free(map->tokens);
    map->tokens = next;
  }
  map->token_count = 0;
}

static void control_token_op_done(void *arg, const struct ingest_result *result)
{
  struct control_token_op *op = arg;
  control *c = op->c;
  struct control_token copy = *op->token;
  int ok = result->outcome == INGEST_ACCEPTED;

  copy.next = NULL;
  if (op->issue) {
    if (ok) {
      log_info("control", "enrol_token_issued", "token_id=%s store=%s device=%s admin=%s "
               "expires_ms=%" PRId64, copy.token_id, copy.store_id, copy.device_id,
               copy.issued_by, copy.expires_ms);
    } else {
      /* Never handed out: nobody holds its secret. */
      control_token_unlink(&c->map, op->token);
      free(op->token);
    }
    op->done(op->arg, ok ? 201 : 503, &copy, ok ? op->text : "",
             ok ? "" : result->message);
  } else {
    op->token->using = 0;
    if (ok) {
      log_info("control", "enrol_token_used", "token_id=%s store=%s device=%s peer=%s serial=%s",
               copy.token_id, copy.store_id, copy.device_id, copy.used_by,
               copy.certificate_serial);
    } else {
      struct control_token *next = op->token->next;
      *op->token = op->before;
      op->token->next = next;
      op->token->using = 0;
    }
    copy.using = 0;
    op->done(op->arg, ok ? 200 : 503, &copy, "", ok ? "" : result->message);
  }
  memset(op->text, 0, sizeof(op->text));
  free(op);
}

/* Produces `token` whole; `op` (taken) is answered by control_token_op_done. */
static int control_token_record(control *c, struct control_token_op *op)
{
  const struct control_token *token = op->token;
  Pos__V1__EnrolToken proto = POS__V1__ENROL_TOKEN__INIT;
  char key[CONTROL_ID_MAX + sizeof("/enrol-token/") + CONTROL_TOKEN_ID_HEX + 1];
  uint8_t *value;
  size_t len;

  proto.token_id = (char *)token->token_id;
  proto.store_id = (char *)token->store_id;
  proto.device_id = (char *)token->device_id;
  proto.secret_sha256.data = (uint8_t *)token->secret_sha256;
  proto.secret_sha256.len = 32;
  proto.issued_ms = token->issued_ms;
  proto.issued_by = (char *)token->issued_by;
  proto.expires_ms = token->expires_ms;
  proto.used_ms = token->used_ms;
  proto.used_by = (char *)token->used_by;
  proto.certificate_serial = (char *)token->certificate_serial;
  if (token->used_ms) {
    proto.public_key_sha256.data = (uint8_t *)token->public_key_sha256;
    proto.public_key_sha256.len = 32;
  }
  len = pos__v1__enrol_token__get_packed_size(&proto);
  value = malloc(len ? len : 1);
  if (!value)
    return -1;
  pos__v1__enrol_token__pack(&proto, value);
  snprintf(key, sizeof(key), "%s/enrol-token/%s", token->store_id, token->token_id);
  /* The value is the ingest's from here, and op is answered in every case. */
  ingest_submit_control(c->ingest, key, value, len, control_token_op_done, op);
  return 0;
}

int64_t control_token_lifetime_ms(const control *c) { return c->token_lifetime_ms; }

int control_token_issue(control *c, const char *store_id, const char *device_id,
                        int64_t valid_ms, const char *issued_by, control_token_fn done,
                        void *arg, char *err, size_t err_size)
{
  struct control_token_op *op = NULL;
  struct control_token *token = NULL;
  char secret[CONTROL_TOKEN_SECRET_HEX + 1];
  int64_t now = clock_wall_ms();
  int status;

  if (!control_ready(c)) {
    snprintf(err, err_size, "loading commands and fleet state from Kafka; retry shortly");
    return 503;
  }
  if (!identity_id_valid(store_id, strlen(store_id)) || !identity_id_valid(device_id, strlen(device_id))) {
    snprintf(err, err_size, "store_id and device_id must be 1-%d characters of A-Z a-z 0-9 . _ -",
             CONTROL_ID_MAX);
    return 400;
  }
  if ((status = control_store_may_enrol(c, store_id, err, err_size)) != 0)
    return status == 403 ? 409 : status;
  if (valid_ms <= 0 || valid_ms > 366LL * 24 * 3600 * 1000) {
    snprintf(err, err_size, "a token is valid for 1 second to 366 days; ask for less (e.g. 72h)");
    return 400;
  }
  if (c->map.token_count >= CONTROL_MAX_TOKENS || !(token = calloc(1, sizeof(*token))) ||
      !(op = calloc(1, sizeof(*op)))) {
    free(token);
    snprintf(err, err_size, "the collector holds %zu enrolment tokens already (or is out of "
             "memory); retry later", c->map.token_count);
    return 503;
  }
  do {
    if (control_token_random_hex(token->token_id, CONTROL_TOKEN_ID_HEX) ||
        control_token_random_hex(secret, CONTROL_TOKEN_SECRET_HEX)) {
      free(token);
      free(op);
      snprintf(err, err_size, "the system's random source failed; retry");
      return 503;
    }
  } while (control_token_find(&c->map, token->token_id));
  snprintf(token->store_id, sizeof(token->store_id), "%s", store_id);
  snprintf(token->device_id, sizeof(token->device_id), "%s", device_id);
  snprintf(token->issued_by, sizeof(token->issued_by), "%s", issued_by ? issued_by : "");
  control_token_hash(secret, token->secret_sha256);
  token->issued_ms = now;
  token->expires_ms = now + valid_ms;
  snprintf(op->text, sizeof(op->text), "%s.%s", token->token_id, secret);
  memset(secret, 0, sizeof(secret));
  token->next = c->map.tokens;
  c->map.tokens = token;
  c->map.token_count++;
  op->c = c;
  op->token = token;
  op->issue = 1;
  op->done = done;
  op->arg = arg;
  if (control_token_record(c, op)) {
    control_token_unlink(&c->map, token);
    free(token);
    free(op);
    snprintf(err, err_size, "collector out of memory");
    return 503;
  }
  return 0;
}

int control_token_check(control *c, const char *presented, const char *store_id,
                        const char *device_id, int64_t now_ms,
                        const struct control_token **out, char *err, size_t err_size)
{
  char id[CONTROL_TOKEN_ID_HEX + 1], when[32];
  unsigned char hash[32];
  const char *dot = presented ? strchr(presented, '.') : NULL;
  struct control_token *token;

  *out = NULL;
  if (!control_ready(c)) {
    snprintf(err, err_size, "the collector is loading its state from Kafka; retry shortly");
    return 503;
  }
  if (!dot || dot - presented != CONTROL_TOKEN_ID_HEX ||
      strlen(dot + 1) != CONTROL_TOKEN_SECRET_HEX) {
    snprintf(err, err_size, "this is not an enrolment token (expected %d hex digits, a dot, %d "
             "hex digits, as posctl enrol-token prints it)", CONTROL_TOKEN_ID_HEX,
             CONTROL_TOKEN_SECRET_HEX);
    return 401;
  }
  memcpy(id, presented, CONTROL_TOKEN_ID_HEX);
  id[CONTROL_TOKEN_ID_HEX] = '\0';
  token = control_token_find(&c->map, id);
  control_token_hash(dot + 1, hash);
  if (!token || !control_token_same(hash, token->secret_sha256, sizeof(hash))) {
    snprintf(err, err_size, "enrolment token %s is not one head office issued (unknown, or "
             "mistyped); ask head office for a new one (posctl enrol-token)", id);
    return 401;
  }
  if (token->using) {
    snprintf(err, err_size, "enrolment token %s is being used by another request right now",
             id);
    return 409;
  }
  if (token->used_ms) {
    control_format_time(token->used_ms, when);
    snprintf(err, err_size, "enrolment token %s was used already, at %s by %s; a token enrols "
             "one device once: ask head office for a new one", id, when, token->used_by);
    if (strcmp(token->store_id, store_id) == 0 && strcmp(token->device_id, device_id) == 0)
      *out = token;
    return 403;
  }
  if (now_ms >= token->expires_ms) {
    control_format_time(token->expires_ms, when);
    snprintf(err, err_size, "enrolment token %s expired at %s; ask head office for a new one",
             id, when);
    return 403;
  }
  if (strcmp(token->store_id, store_id) != 0 || strcmp(token->device_id, device_id) != 0) {
    snprintf(err, err_size, "enrolment token %s was issued for device %s of store %s, not for "
             "device %s of store %s: check the device's store_id and device_id, or ask for a "
             "token for this device", id, token->device_id, token->store_id, device_id,
             store_id);
    return 403;
  }
  *out = token;
  return 0;
}

int control_token_use(control *c, const char *token_id, const char *used_by,
                      const char *serial, const unsigned char public_key_sha256[32],
                      control_token_fn done, void *arg, char *err, size_t err_size)
{
  struct control_token *token = control_token_find(&c->map, token_id);
  struct control_token_op *op;

  if (!token || token->used_ms || token->using) {
    snprintf(err, err_size, "enrolment token %s cannot be used now; retry", token_id);
    return 503;
  }
  op = calloc(1, sizeof(*op));
  if (!op) {
    snprintf(err, err_size, "collector out of memory");
    return 503;
  }
  op->c = c;
  op->token = token;
  op->before = *token;
  op->done = done;
  op->arg = arg;
  token->using = 1;
  token->used_ms = clock_wall_ms();
  snprintf(token->used_by, sizeof(token->used_by), "%s", used_by ? used_by : "");
  snprintf(token->certificate_serial, sizeof(token->certificate_serial), "%s",
           serial ? serial : "");
  memcpy(token->public_key_sha256, public_key_sha256, 32);
  if (control_token_record(c, op)) {
    struct control_token *next = token->next;
    *token = op->before;
    token->next = next;
    free(op);
    snprintf(err, err_size, "collector out of memory");
    return 503;
  }
  return 0;
}

/* ---- decommissioned stores ------------------------------------------------------------ */

int control__decommission_put(struct control_map *map, const char *store_id,
                              const Pos__V1__StoreDecommission *proto)
{
  struct control_store *store = proto ? control__store_get(map, store_id)
                                      : control__store_find(map, store_id);

  if (!proto) {
    if (store) {
      store->decommissioned_ms = 0;
      store->decommissioned_by[0] = store->decommission_reason[0] = '\0';
    }
    return 0;
  }
  if (!store)
    return -1;
  store->decommissioned_ms = proto->decommissioned_ms > 0 ? proto->decommissioned_ms : 1;
  snprintf(store->decommissioned_by, sizeof(store->decommissioned_by), "%s",
           proto->decommissioned_by);
  snprintf(store->decommission_reason, sizeof(store->decommission_reason), "%s", proto->reason);
  return 0;
}

/* A decommission on its way to Kafka. */
struct control_store_op {
  control *c;
  char store_id[CONTROL_ID_MAX + 1];
  Pos__V1__StoreDecommission proto; /* strings below */
  char by[CONTROL_ID_MAX + 1];
  char reason[CONTROL_MESSAGE_MAX + 1];
  int undo;
  control_store_fn done;
  void *arg;
};

static void control_store_op_done(void *arg, const struct ingest_result *result)
{
  struct control_store_op *op = arg;
  int ok = result->outcome == INGEST_ACCEPTED;

  /* Applied once Kafka holds it: what the admin was told is what a restart reads. */
  if (ok && control__decommission_put(&op->c->map, op->store_id, op->undo ? NULL : &op->proto))
    ok = 0;
  if (ok)
    log_info("control", op->undo ? "store_recommissioned" : "store_decommissioned",
             "store=%s admin=%s reason=\"%s\"", op->store_id, op->by, op->reason);
  op->done(op->arg, ok ? 200 : 503, ok ? "" : result->message);
  free(op);
}

int control_decommission(control *c, const char *store_id, int undo, const char *admin,
                         const char *reason, control_store_fn done, void *arg, char *err,
                         size_t err_size)
{
  const struct control_store *store;
  struct control_store_op *op;
  char key[CONTROL_ID_MAX + sizeof("/decommissioned")];
  uint8_t *value = NULL;
  size_t len = 0;

  if (!control_ready(c)) {
    snprintf(err, err_size, "loading commands and fleet state from Kafka; retry shortly");
    return 503;
  }
  if (!identity_id_valid(store_id, strlen(store_id))) {
    snprintf(err, err_size, "store_id must be 1-%d characters of A-Z a-z 0-9 . _ -",
             CONTROL_ID_MAX);
    return 400;
  }
  store = control__store_find(&c->map, store_id);
  if (!undo == (store && store->decommissioned_ms)) {
    snprintf(err, err_size, "store %s is %s already", store_id,
             undo ? "in service" : "decommissioned");
    return 409;
  }
  op = calloc(1, sizeof(*op));
  if (!op) {
    snprintf(err, err_size, "collector out of memory");
    return 503;
  }
  op->c = c;
  op->undo = undo;
  op->done = done;
  op->arg = arg;
  snprintf(op->store_id, sizeof(op->store_id), "%s", store_id);
  snprintf(op->by, sizeof(op->by), "%s", admin ? admin : "");
  snprintf(op->reason, sizeof(op->reason), "%s", reason ? reason : "");
  pos__v1__store_decommission__init(&op->proto);
  op->proto.store_id = op->store_id;
  op->proto.decommissioned_ms = clock_wall_ms();
  op->proto.decommissioned_by = op->by;
  op->proto.reason = op->reason;
  if (!undo) {
    len = pos__v1__store_decommission__get_packed_size(&op->proto);
    value = malloc(len ? len : 1);
    if (!value) {
      free(op);
      snprintf(err, err_size, "collector out of memory");
      return 503;
    }
    pos__v1__store_decommission__pack(&op->proto, value);
  }
  snprintf(key, sizeof(key), "%s/decommissioned", store_id);
  ingest_submit_control(c->ingest, key, value, len, control_store_op_done, op);
  return 0;
}

int control_store_may_enrol(const control *c, const char *store_id, char *err, size_t err_size)
{
  const struct control_store *store;
  char when[32];

  if (!control_ready(c)) {
    snprintf(err, err_size, "the collector is loading its state from Kafka; retry shortly");
    return 503;
  }
  store = control__store_find(&c->map, store_id);
  if (!store || !store->decommissioned_ms)
    return 0;
  control_format_time(store->decommissioned_ms, when);
  snprintf(err, err_size, "store %s was decommissioned by head office (%s, at %s%s%s): its "
           "devices get no new certificate; if the store is back in service, head office "
           "runs posctl decommission --store %s --undo",
           store_id, store->decommissioned_by[0] ? store->decommissioned_by : "an admin", when,
           store->decommission_reason[0] ? ": " : "", store->decommission_reason, store_id);
  return 403;
}
