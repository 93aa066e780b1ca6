/*
 * sales_api.c - POST /v1/sales: authenticate, validate, journal, answer.
 */
#include "ingest/http/sales_api.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/http/sale_json.h"
#include "platform/log.h"
#include "platform/metrics.h"

#define SALES_API_TOKEN_MIN 16
#define SALES_API_TOKEN_MAX 128
#define SALES_API_TOKENS_MAX 1024

struct sales_api_token {
  char terminal_id[SALE_TEXT_MAX + 1]; /* "*" = any terminal */
  char token[SALES_API_TOKEN_MAX + 1];
};

struct sales_api {
  journal *journal;
  size_t max_sales_per_request;
  struct sales_api_token *tokens;
  size_t token_count;
  size_t pending;
  void (*on_stored)(const struct sale *sale, void *arg);
  void *on_stored_arg;
  metrics_family *answers;           /* pos_agent_sales_requests_total{status,outcome} */
  metrics_series *created, *retried; /* its two series on the sale path, kept */
  char *answer;          /* the body of an array's 201/200, reused by every request */
  size_t answer_capacity;
  struct sales_api_request *spare; /* a finished one-sale request, for the next one */
};

/* Counts an answer to POST /v1/sales: lock-free for 201 and 200, a short
 * lookup under the family's mutex for refusals. Loop thread. */
static void sales_api_count(const sales_api *api, int status, const char *outcome)
{
  char status_text[16];
  const char *values[2] = {status_text, outcome};

  if (status == 201 && api->created) {
    metrics_inc(api->created);
    return;
  }
  if (status == 200 && api->retried) {
    metrics_inc(api->retried);
    return;
  }
  snprintf(status_text, sizeof(status_text), "%d", status);
  metrics_inc(metrics_series_get(api->answers, values));
}

/* One request waiting for its commit. */
struct sales_api_request {
  struct journal_write write; /* first: done() gets this pointer back */
  sales_api *api;
  http_exchange *exchange;
  struct sale *sales;
  size_t count;
  int is_array;
  struct journal_item_result results[];
};

void sales_api_respond_error(http_exchange *exchange, int status, const char *message,
                             const char *field, const char *extra_headers)
{
  static const char out_of_memory[] = "{\"error\":\"out of memory\"}";
  json_t *body = json_pack("{s:s}", "error", message);
  char *text = NULL;

  if (body && field)
    json_object_set_new(body, "field", json_string(field));
  if (body)
    text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (text)
    http_exchange_respond(exchange, status, "application/json", extra_headers, text,
                          strlen(text));
  else
    http_exchange_respond(exchange, 500, "application/json", NULL, out_of_memory,
                          strlen(out_of_memory));
  free(text);
  json_decref(body);
}

void sales_api_respond_json(http_exchange *exchange, int status, json_t *body)
{
  char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  if (text)
    http_exchange_respond(exchange, status, "application/json", NULL, text, strlen(text));
  else
    sales_api_respond_error(exchange, 500, "out of memory building the answer", NULL, NULL);
  free(text);
  json_decref(body);
}

/* ---- terminal tokens -------------------------------------------------- */

static int sales_api_load_tokens(sales_api *api, const char *path, char *err, size_t err_size)
{
  FILE *file = fopen(path, "r");
  char line[512];
  int line_no = 0;
  int rc = -1;

  if (!file) {
    snprintf(err, err_size,
             "terminal tokens %s cannot be read: %s; create it with one '<terminal_id> "
             "<token>' line per POS terminal (api.terminal_tokens)",
             path, strerror(errno));
    return -1;
  }
  while (fgets(line, sizeof(line), file)) {
    char terminal[sizeof(line)], token[sizeof(line)], extra[sizeof(line)];
    int fields;
    line_no++;
    if (!strchr(line, '\n') && !feof(file)) {
      snprintf(err, err_size, "%s:%d: line too long", path, line_no);
      goto out;
    }
    fields = sscanf(line, " %511s %511s %511s", terminal, token, extra);
    if (fields <= 0 || terminal[0] == '#')
      continue;
    if (fields != 2) {
      snprintf(err, err_size, "%s:%d: expected '<terminal_id> <token>'", path, line_no);
      goto out;
    }
    if (strlen(terminal) > SALE_TEXT_MAX) {
      snprintf(err, err_size, "%s:%d: terminal id longer than %d characters", path, line_no,
               SALE_TEXT_MAX);
      goto out;
    }
    if (strlen(token) < SALES_API_TOKEN_MIN || strlen(token) > SALES_API_TOKEN_MAX) {
      snprintf(err, err_size,
               "%s:%d: the token of terminal %s must be %d to %d characters (make one with "
               "'openssl rand -hex 16')",
               path, line_no, terminal, SALES_API_TOKEN_MIN, SALES_API_TOKEN_MAX);
      goto out;
    }
    if (api->token_count == SALES_API_TOKENS_MAX) {
      snprintf(err, err_size, "%s:%d: more than %d tokens", path, line_no,
               SALES_API_TOKENS_MAX);
      goto out;
    }
    {
      struct sales_api_token *grown =
          realloc(api->tokens, (api->token_count + 1) * sizeof(*api->tokens));
      if (!grown) {
        snprintf(err, err_size, "%s: out of memory", path);
        goto out;
      }
      api->tokens = grown;
      /* Lengths were checked above, so these copies are whole. */
      memcpy(grown[api->token_count].terminal_id, terminal, strlen(terminal) + 1);
      memcpy(grown[api->token_count].token, token, strlen(token) + 1);
      api->token_count++;
    }
  }
  if (api->token_count == 0) {
    snprintf(err, err_size,
             "terminal tokens %s has no tokens: no POS terminal could submit sales; add "
             "'<terminal_id> <token>' lines",
             path);
    goto out;
  }
  rc = 0;
out:
  fclose(file);
  return rc;
}

/* Compares in time independent of where the strings differ. */
static int sales_api_token_equal(const char *expected, const char *given, size_t given_len)
{
  size_t expected_len = strlen(expected);
  unsigned char diff = (unsigned char)(expected_len != given_len);
  for (size_t i = 0; i < given_len; i++)
    diff |= (unsigned char)(expected[i % (expected_len ? expected_len : 1)] ^ given[i]);
  return diff == 0;
}

static const struct sales_api_token *sales_api_authenticate(const sales_api *api,
                                                            const char *authorization)
{
  const char *token;
  const struct sales_api_token *found = NULL;
  size_t len;

  if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
    return NULL;
  token = authorization + 7;
  while (*token == ' ')
    token++;
  len = strlen(token);
  while (len > 0 && token[len - 1] == ' ')
    len--;
  if (len == 0 || len > SALES_API_TOKEN_MAX)
    return NULL;
  /* Look at every token so the time taken does not say which one matched. */
  for (size_t i = 0; i < api->token_count; i++) {
    if (sales_api_token_equal(api->tokens[i].token, token, len) && !found)
      found = &api->tokens[i];
  }
  return found;
}

/* ---- the request ------------------------------------------------------ */

static void sales_api_field_path(const struct sales_api_request *req, size_t index,
                                 const char *field, char *out, size_t out_size)
{
  if (req->is_array)
    snprintf(out, out_size, "[%zu].%s", index, field);
  else
    snprintf(out, out_size, "%s", field);
}

/* ---- the answer to a journaled request ---------------------------------- */

/* Appends `length` bytes at `p`; returns the end. */
static char *sales_api_put(char *p, const char *text, size_t length)
{
  memcpy(p, text, length);
  return p + length;
}

#define SALES_API_PUT_LITERAL(p, literal) sales_api_put((p), (literal), sizeof(literal) - 1)

/* Appends `value` in decimal, as jansson prints a json_int_t; returns the end. */
static char *sales_api_put_int(char *p, int64_t value)
{
  char digits[20];
  size_t count = 0;
  uint64_t magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;

  if (value < 0)
    *p++ = '-';
  do {
    digits[count++] = (char)('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude != 0);
  while (count > 0)
    *p++ = digits[--count];
  return p;
}

/*
 * The length of `id` when jansson would write it into a JSON string as is
 * (printable ASCII without '"' or '\\': every valid sale_id), else 0.
 */
static size_t sales_api_plain_length(const char *id)
{
  size_t length = 0;

  for (; id[length] != '\0'; length++) {
    unsigned char c = (unsigned char)id[length];
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
      return 0;
  }
  return length;
}

size_t sales_api_answer_write(char *out, size_t out_size, const struct sale *sales,
                              const struct journal_item_result *results, size_t count,
                              int is_array)
{
  char *p = out;
  size_t id_length, written = 0;

  if (out_size < SALES_API_ANSWER_SIZE(count) || (!is_array && count != 1))
    goto out;
  if (!is_array) {
    p = SALES_API_PUT_LITERAL(p, "{\"seq\":");
    p = sales_api_put_int(p, results[0].seq);
    if (results[0].outcome == JOURNAL_DUPLICATE)
      p = SALES_API_PUT_LITERAL(p, ",\"duplicate\":true");
    *p++ = '}';
    written = (size_t)(p - out);
    goto out;
  }
  p = SALES_API_PUT_LITERAL(p, "{\"results\":[");
  for (size_t i = 0; i < count; i++) {
    id_length = sales_api_plain_length(sales[i].sale_id);
    if (id_length == 0 || id_length > SALE_ID_MAX)
      goto out;
    if (i > 0)
      *p++ = ',';
    p = SALES_API_PUT_LITERAL(p, "{\"sale_id\":\"");
    p = sales_api_put(p, sales[i].sale_id, id_length);
    p = SALES_API_PUT_LITERAL(p, "\",\"seq\":");
    p = sales_api_put_int(p, results[i].seq);
    if (results[i].outcome == JOURNAL_DUPLICATE)
      p = SALES_API_PUT_LITERAL(p, ",\"duplicate\":true");
    *p++ = '}';
  }
  p = SALES_API_PUT_LITERAL(p, "]}");
  written = (size_t)(p - out);
out:
  return written;
}

/* The same answer built with jansson: the fallback for what the writer above declines. */
static json_t *sales_api_answer_json(const struct sales_api_request *req)
{
  json_t *body, *results;

  if (!req->is_array) {
    body = json_pack("{s:I}", "seq", (json_int_t)req->results[0].seq);
    if (body && req->results[0].outcome == JOURNAL_DUPLICATE)
      json_object_set_new(body, "duplicate", json_true());
    return body;
  }
  results = json_array();
  for (size_t i = 0; results && i < req->count; i++) {
    json_t *item = json_pack("{s:s, s:I}", "sale_id", req->sales[i].sale_id, "seq",
                             (json_int_t)req->results[i].seq);
    if (item && req->results[i].outcome == JOURNAL_DUPLICATE)
      json_object_set_new(item, "duplicate", json_true());
    json_array_append_new(results, item);
  }
  return json_pack("{s:o}", "results", results);
}

/*
 * Answers a journaled request with `status` (201 or 200): the body written
 * by hand into a buffer on the stack (one sale) or the API's reused buffer
 * (an array), no printf and no allocation once the buffer has grown; jansson
 * only when that declines.
 */
static void sales_api_respond_stored(sales_api *api, const struct sales_api_request *req,
                                     int status)
{
  char single[SALES_API_ANSWER_SIZE(1)];
  char *text = single;
  size_t capacity = sizeof(single), length = 0;

  if (req->is_array) {
    capacity = SALES_API_ANSWER_SIZE(req->count);
    if (capacity > api->answer_capacity) {
      char *grown = realloc(api->answer, capacity);
      if (grown) {
        api->answer = grown;
        api->answer_capacity = capacity;
      }
    }
    text = capacity <= api->answer_capacity ? api->answer : NULL;
  }
  if (text)
    length = sales_api_answer_write(text, capacity, req->sales, req->results, req->count,
                                    req->is_array);
  if (length > 0)
    http_exchange_respond(req->exchange, status, "application/json", NULL, text, length);
  else
    sales_api_respond_json(req->exchange, status, sales_api_answer_json(req));
}

/*
 * A zeroed request for `count` sales: the API's spare when it is a single
 * sale (a terminal posts one at a time: no allocation per sale), else new.
 */
static struct sales_api_request *sales_api_request_new(sales_api *api, size_t count)
{
  struct sales_api_request *req;
  size_t size = sizeof(*req) + count * sizeof(req->results[0]);

  if (count == 1 && api->spare != NULL) {
    req = api->spare;
    api->spare = NULL;
    memset(req, 0, size);
    return req;
  }
  return calloc(1, size);
}

/* Keeps a one-sale request as the API's spare, or frees it. */
static void sales_api_request_free(sales_api *api, struct sales_api_request *req)
{
  if (req->count == 1 && api->spare == NULL) {
    api->spare = req;
    return;
  }
  free(req);
}

static void sales_api_on_journaled(struct journal_write *write)
{
  struct sales_api_request *req = (struct sales_api_request *)write;
  sales_api *api = req->api;
  char field[64];

  api->pending--;
  if (write->error == JOURNAL_ECONFLICT) {
    json_t *body;
    sales_api_field_path(req, write->conflict_index, "sale_id", field, sizeof(field));
    body = json_pack("{s:s, s:s, s:I}", "error", write->message, "field", field, "seq",
                     (json_int_t)write->conflict_seq);
    sales_api_respond_json(req->exchange, 409, body);
    sales_api_count(api, 409, "conflict");
  } else if (write->error == JOURNAL_EFULL) {
    sales_api_respond_error(req->exchange, 503, write->message, NULL, "Retry-After: 60\r\n");
    sales_api_count(api, 503, "journal_full");
  } else if (write->error == JOURNAL_EBUSY) {
    sales_api_respond_error(req->exchange, 503, write->message, NULL, "Retry-After: 2\r\n");
    sales_api_count(api, 503, "journal_busy");
  } else if (write->error) {
    sales_api_respond_error(req->exchange, 503, write->message, NULL, "Retry-After: 30\r\n");
    sales_api_count(api, 503, "journal_error");
  } else {
    size_t duplicates = 0;
    int status;
    for (size_t i = 0; i < req->count; i++) {
      duplicates += req->results[i].outcome == JOURNAL_DUPLICATE;
      if (api->on_stored && req->results[i].outcome == JOURNAL_STORED)
        api->on_stored(&req->sales[i], api->on_stored_arg);
    }
    /* 201 when anything was created; a pure retry answers 200. */
    status = duplicates == req->count ? 200 : 201;
    sales_api_respond_stored(api, req, status);
    sales_api_count(api, status, NULL);
  }
  sale_array_free(req->sales, req->count);
  sales_api_request_free(api, req);
}

static int sales_api_is_json(const char *content_type)
{
  size_t len = strlen("application/json");
  if (!content_type || strncasecmp(content_type, "application/json", len) != 0)
    return 0;
  return content_type[len] == '\0' || content_type[len] == ';' || content_type[len] == ' ';
}

#define SALES_API_UNAUTHORIZED                                                                 \
  "a valid terminal token is required: send 'Authorization: Bearer <token>' with this "         \
  "terminal's token from the agent's tokens file"
#define SALES_API_CHALLENGE "WWW-Authenticate: Bearer realm=\"pos-agent\"\r\n"
#define SALES_API_NOT_JSON "sales must be sent as Content-Type: application/json"

int sales_api_check_headers(const sales_api *api, const http_exchange *request,
                            struct http_refusal *refusal)
{
  if (!sales_api_authenticate(api, http_exchange_header(request, "Authorization"))) {
    log_warn("api", "unauthorized", "peer=%s body=not_read", http_exchange_peer(request));
    snprintf(refusal->error, sizeof(refusal->error), "%s", SALES_API_UNAUTHORIZED);
    refusal->extra_headers = SALES_API_CHALLENGE;
    sales_api_count(api, 401, "unauthorized");
    return 401;
  }
  if (!sales_api_is_json(http_exchange_header(request, "Content-Type"))) {
    snprintf(refusal->error, sizeof(refusal->error), "%s", SALES_API_NOT_JSON);
    sales_api_count(api, 415, "not_json");
    return 415;
  }
  return 0;
}

void sales_api_handle(sales_api *api, http_exchange *exchange)
{
  const struct sales_api_token *token;
  struct sale_error error;
  struct sales_api_request *req = NULL;
  struct sale *sales = NULL;
  size_t count = 0, body_len;
  int is_array = 0, rc;
  const char *body;

  token = sales_api_authenticate(api, http_exchange_header(exchange, "Authorization"));
  if (!token) {
    log_warn("api", "unauthorized", "peer=%s", http_exchange_peer(exchange));
    sales_api_respond_error(exchange, 401, SALES_API_UNAUTHORIZED, NULL, SALES_API_CHALLENGE);
    sales_api_count(api, 401, "unauthorized");
    return;
  }
  if (!sales_api_is_json(http_exchange_header(exchange, "Content-Type"))) {
    sales_api_respond_error(exchange, 415, SALES_API_NOT_JSON, NULL, NULL);
    sales_api_count(api, 415, "not_json");
    return;
  }
  body = http_exchange_body(exchange, &body_len);
  if (sale_json_parse(body, body_len, api->max_sales_per_request, &sales, &count, &is_array,
                      &error)) {
    log_info("api", "sale_rejected", "peer=%s terminal=%s field=%s", http_exchange_peer(exchange),
             token->terminal_id, error.field[0] ? error.field : "-");
    sales_api_respond_error(exchange, 400, error.message, error.field, NULL);
    sales_api_count(api, 400, "invalid_sale");
    return;
  }
  /* A terminal's token speaks for that terminal only (a hub's '*' for all). */
  if (strcmp(token->terminal_id, "*") != 0) {
    for (size_t i = 0; i < count; i++) {
      if (strcmp(sales[i].terminal_id, token->terminal_id) != 0) {
        char message[256], field[64];
        snprintf(message, sizeof(message),
                 "this token belongs to terminal %s and cannot submit sales of terminal %s",
                 token->terminal_id, sales[i].terminal_id);
        if (is_array)
          snprintf(field, sizeof(field), "[%zu].terminal_id", i);
        else
          snprintf(field, sizeof(field), "terminal_id");
        sales_api_respond_error(exchange, 403, message, field, NULL);
        sales_api_count(api, 403, "other_terminal");
        sale_array_free(sales, count);
        return;
      }
    }
  }

  req = sales_api_request_new(api, count);
  if (!req) {
    sale_array_free(sales, count);
    sales_api_respond_error(exchange, 503, "the agent is out of memory; retry shortly", NULL,
                            "Retry-After: 5\r\n");
    sales_api_count(api, 503, "out_of_memory");
    return;
  }
  req->api = api;
  req->exchange = exchange;
  req->sales = sales;
  req->count = count;
  req->is_array = is_array;
  req->write.sales = sales;
  req->write.count = count;
  req->write.results = req->results;
  req->write.done = sales_api_on_journaled;
  /* A lone sale committed on this thread is answered from inside
   * journal_submit (sales_api_on_journaled frees req): counted pending
   * first. */
  req->write.done_in_submit = 1;
  api->pending++;
  rc = journal_submit(api->journal, &req->write);
  if (rc) {
    api->pending--;
    sales_api_respond_error(exchange, 503, journal_strerror(rc), NULL, "Retry-After: 5\r\n");
    sales_api_count(api, 503, "journal_closing");
    sale_array_free(sales, count);
    free(req);
    return;
  }
}

sales_api *sales_api_create(journal *j, const struct sales_api_options *options, char *err,
                            size_t err_size)
{
  sales_api *api = calloc(1, sizeof(*api));
  if (!api) {
    snprintf(err, err_size, "out of memory");
    return NULL;
  }
  api->journal = j;
  api->max_sales_per_request = options->max_sales_per_request;
  api->on_stored = options->on_stored;
  api->on_stored_arg = options->on_stored_arg;
  api->answers = metrics_counter(metrics_global(), "pos_agent_sales_requests_total",
                                 "Answers to POST /v1/sales, by HTTP status and outcome "
                                 "(created, retry, unauthorized, not_json, invalid_sale, "
                                 "other_terminal, conflict, journal_full, journal_busy, ...).",
                                 "status,outcome");
  {
    const char *created[2] = {"201", "created"}, *retried[2] = {"200", "retry"};
    api->created = metrics_series_get(api->answers, created);
    api->retried = metrics_series_get(api->answers, retried);
  }
  if (sales_api_load_tokens(api, options->tokens_path, err, err_size)) {
    sales_api_destroy(api);
    return NULL;
  }
  log_info("api", "tokens_loaded", "path=%s terminals=%zu", options->tokens_path,
           api->token_count);
  return api;
}

size_t sales_api_pending(const sales_api *api) { return api->pending; }

void sales_api_destroy(sales_api *api)
{
  if (!api)
    return;
  free(api->tokens);
  free(api->answer);
  free(api->spare);
  free(api);
}
