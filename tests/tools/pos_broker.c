/*
 * pos_broker.c - a standalone Kafka broker for tests: librdkafka's mock
 * cluster on loopback ports with the project's topics created, so that
 * broker, collector and agent run as three processes.
 *
 *   pos-broker [--brokers N] [--partitions N] [--topic-prefix P] [--produce-delay MS]
 *   pos-broker --partition-of N STORE_ID...   (each store's partition of N, as the
 *                                              collector's producer places it, then exits)
 *
 * Prints one line "bootstrap=127.0.0.1:PORT[,...]" on stdout when it is
 * ready, then runs until SIGTERM or SIGINT. Everything is kept in memory
 * (the newest 5 MB or 100,000 message sets of each partition): a test
 * broker, never storage. kcat reads it like any Kafka.
 *
 * Compaction. A real broker compacts the compacted topics (agent-status,
 * ingest-state, control) behind the clients' backs: it keeps only the
 * newest record of each key and, once delete.retention.ms has passed,
 * drops keys whose newest record is a tombstone (null value). The mock
 * cluster never does. On SIGUSR1 pos-broker does what such a broker may
 * have done by then, at once: it moves to a new mock cluster holding, for
 * the compacted topics, only the newest record of each key (tombstoned
 * keys gone) and, for the data topics, every record at its offset (checked
 * record by record). The mock cannot delete in place and cannot listen on
 * a port of our choosing, so the new cluster has new ports: a second
 * "bootstrap=..." line on stdout says where; clients of the old one must
 * be restarted (a test kills the collector before it compacts anyway).
 * stdout then says "compacted=N kept=K dropped=D" (records).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kafka/kafka.h"
#include "platform/log.h"

static void usage(FILE *out)
{
  fprintf(out, "usage: pos-broker [--brokers N] [--partitions N] [--topic-prefix PREFIX]\n"
               "  --brokers N        mock brokers (1-16, default 1)\n"
               "  --partitions N     partitions per topic (1-1000, default 4)\n"
               "  --topic-prefix P   topic name prefix (default \"pos.\")\n"
               "  --produce-delay MS a proxy per broker that delivers what clients send MS ms\n"
               "                     late (\"delayed=HOST:PORT,...\" on stdout)\n"
               "Prints \"bootstrap=HOST:PORT,...\" on stdout, runs until SIGTERM/SIGINT.\n"
               "SIGUSR1 compacts the compacted topics (newest record per key, tombstoned\n"
               "keys dropped) on a new cluster and prints its new bootstrap= line.\n"
               "pos-broker --partition-of N STORE_ID...: prints \"STORE_ID<TAB>partition\" for\n"
               "each, of N partitions, as the collector's producer places it, and exits.\n");
}

/* ---- --produce-delay: what clients send reaches the broker N ms later ------------------------ */
/*
 * A real broker may append a produce request well after the client sent it
 * (a slow network, a busy broker), up to the request's timeout; the mock
 * appends at once. With --produce-delay MS, pos-broker puts a proxy in front
 * of each mock broker that holds every Produce request for MS ms (in order)
 * and delivers it even after the client is gone (bytes in flight); other
 * requests and all answers pass at once. Metadata answers are rewritten to name
 * the proxies, so clients keep talking through them. stdout then carries a
 * line "delayed=127.0.0.1:PORT[,...]" after the bootstrap= line.
 */
#define PROXY_MAX_BROKERS 16
#define PROXY_CORRELATIONS 256

struct proxy_listener {
  int fd;
  int port;      /* where clients connect */
  int mock_port; /* where the mock broker listens */
};

static struct proxy_listener proxy_listeners[PROXY_MAX_BROKERS];
static int proxy_count;
static int proxy_delay_ms;

struct proxy_held {
  struct proxy_held *next;
  uint64_t due_ms;
  size_t len, sent;
  uint8_t data[];
};

struct proxy_conn {
  int client, broker;
  /* client -> broker: one request at a time */
  struct proxy_held *request;
  uint8_t request_length[4];
  size_t request_have;
  struct {
    int32_t correlation;
    int16_t api_key, api_version;
  } sent[PROXY_CORRELATIONS];
  unsigned sent_next;
  /* broker -> client: one frame at a time */
  uint8_t *frame;
  size_t frame_len, frame_have;
  uint8_t length[4];
  size_t length_have;
};

static uint64_t proxy_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t proxy_be32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int proxy_write_all(int fd, const uint8_t *data, size_t len)
{
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/*
 * Takes the client's bytes frame by frame: a Produce request is held for
 * the delay (in order with the other Produce requests), anything else goes
 * to the broker at once (librdkafka matches answers by correlation id).
 * Notes each request's api key and version. -1 when the broker is gone.
 */
static int proxy_requests(struct proxy_conn *c, const uint8_t *data, size_t len,
                          struct proxy_held ***tail)
{
  while (len > 0) {
    size_t n;
    if (c->request_have < 4) {
      c->request_length[c->request_have++] = *data++;
      len--;
      if (c->request_have == 4) {
        uint32_t frame_len = proxy_be32(c->request_length);
        c->request = malloc(sizeof(*c->request) + frame_len + 4);
        if (!c->request)
          return -1;
        c->request->next = NULL;
        c->request->len = frame_len + 4;
        c->request->sent = 0;
        memcpy(c->request->data, c->request_length, 4);
      }
      continue;
    }
    n = c->request->len - c->request_have < len ? c->request->len - c->request_have : len;
    memcpy(c->request->data + c->request_have, data, n);
    c->request_have += n;
    data += n;
    len -= n;
    if (c->request_have == c->request->len) {
      struct proxy_held *h = c->request;
      unsigned slot = c->sent_next++ % PROXY_CORRELATIONS;
      int16_t api_key = h->len >= 12 ? (int16_t)(h->data[4] << 8 | h->data[5]) : -1;
      c->sent[slot].api_key = api_key;
      c->sent[slot].api_version = h->len >= 12 ? (int16_t)(h->data[6] << 8 | h->data[7]) : 0;
      c->sent[slot].correlation = h->len >= 12 ? (int32_t)proxy_be32(h->data + 8) : -1;
      c->request = NULL;
      c->request_have = 0;
      if (api_key == 0) {
        h->due_ms = proxy_now_ms() + (uint64_t)proxy_delay_ms;
        **tail = h;
        *tail = &h->next;
      } else {
        int rc = proxy_write_all(c->broker, h->data, h->len);
        free(h);
        if (rc)
          return -1;
      }
    }
  }
  return 0;
}

static int proxy_uvarint(const uint8_t *p, size_t len, size_t *at, uint64_t *value)
{
  unsigned shift = 0;
  *value = 0;
  while (*at < len && shift < 64) {
    uint8_t b = p[(*at)++];
    *value |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return 0;
    shift += 7;
  }
  return -1;
}

/* Rewrites the broker ports of a Metadata answer (v1-v12) to the proxies' ports, in place. */
static void proxy_rewrite_metadata(uint8_t *frame, size_t len, int version)
{
  int flexible = version >= 9;
  size_t at = 4; /* after the correlation id */
  uint64_t count, skip;

  if (version < 1)
    return;
  if (flexible && (proxy_uvarint(frame, len, &at, &skip) || skip != 0))
    return; /* header tagged fields: none expected */
  if (version >= 3)
    at += 4; /* throttle_time_ms */
  if (flexible) {
    if (proxy_uvarint(frame, len, &at, &count) || count == 0)
      return;
    count--;
  } else {
    if (at + 4 > len)
      return;
    count = proxy_be32(frame + at);
    at += 4;
  }
  for (uint64_t i = 0; i < count; i++) {
    uint64_t host_len, rack_len, tags;
    at += 4; /* node_id */
    if (flexible) {
      if (proxy_uvarint(frame, len, &at, &host_len) || host_len == 0)
        return;
      at += host_len - 1;
    } else {
      if (at + 2 > len)
        return;
      at += 2 + (size_t)(frame[at] << 8 | frame[at + 1]);
    }
    if (at + 4 > len)
      return;
    for (int p = 0; p < proxy_count; p++) {
      if ((int)proxy_be32(frame + at) == proxy_listeners[p].mock_port) {
        uint32_t port = (uint32_t)proxy_listeners[p].port;
        frame[at] = (uint8_t)(port >> 24);
        frame[at + 1] = (uint8_t)(port >> 16);
        frame[at + 2] = (uint8_t)(port >> 8);
        frame[at + 3] = (uint8_t)port;
        break;
      }
    }
    at += 4;
    if (flexible) {
      if (proxy_uvarint(frame, len, &at, &rack_len))
        return;
      at += rack_len > 0 ? rack_len - 1 : 0;
      if (proxy_uvarint(frame, len, &at, &tags))
        return;
      for (uint64_t t = 0; t < tags; t++) {
        uint64_t tag, size;
        if (proxy_uvarint(frame, len, &at, &tag) || proxy_uvarint(frame, len, &at, &size))
          return;
        at += size;
      }
    } else {
      int16_t rack;
      if (at + 2 > len)
        return;
      rack = (int16_t)(frame[at] << 8 | frame[at + 1]);
      at += 2 + (rack > 0 ? (size_t)rack : 0);
    }
  }
}

/* Passes the broker's answers on, frame by frame, rewriting Metadata. -1 when a side closed. */
static int proxy_answers(struct proxy_conn *c, const uint8_t *data, size_t len)
{
  while (len > 0) {
    if (c->length_have < 4) {
      c->length[c->length_have++] = *data++;
      len--;
      if (c->length_have == 4) {
        c->frame_len = proxy_be32(c->length);
        c->frame_have = 0;
        c->frame = malloc(c->frame_len + 4);
        if (!c->frame)
          return -1;
        memcpy(c->frame, c->length, 4);
      }
      continue;
    }
    {
      size_t n = c->frame_len - c->frame_have < len ? c->frame_len - c->frame_have : len;
      memcpy(c->frame + 4 + c->frame_have, data, n);
      c->frame_have += n;
      data += n;
      len -= n;
    }
    if (c->frame_have == c->frame_len) {
      int32_t correlation = c->frame_len >= 4 ? (int32_t)proxy_be32(c->frame + 4) : -1;
      int rc;
      for (unsigned s = 0; s < PROXY_CORRELATIONS; s++) {
        if (c->sent[s].correlation == correlation && c->sent[s].api_key == 3) {
          proxy_rewrite_metadata(c->frame + 4, c->frame_len, c->sent[s].api_version);
          break;
        }
      }
      rc = proxy_write_all(c->client, c->frame, c->frame_len + 4);
      free(c->frame);
      c->frame = NULL;
      c->length_have = 0;
      if (rc)
        return -1;
    }
  }
  return 0;
}

static void *proxy_conn_main(void *arg)
{
  struct proxy_conn *c = arg;
  struct proxy_held *head = NULL, **tail = &head;
  int client_open = 1;
  uint8_t buffer[65536];

  for (;;) {
    struct pollfd fds[2] = {{c->broker, POLLIN, 0}, {client_open ? c->client : -1, POLLIN, 0}};
    uint64_t now = proxy_now_ms();
    int timeout = 100;
    if (head)
      timeout = head->due_ms > now ? (int)(head->due_ms - now) : 0;
    else if (!client_open)
      break; /* the client is gone and everything it sent is delivered */
    if (poll(fds, 2, timeout) < 0 && errno != EINTR)
      break;
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(c->client, buffer, sizeof(buffer), 0);
      if (n <= 0) {
        client_open = 0;
      } else if (proxy_requests(c, buffer, (size_t)n, &tail)) {
        break;
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(c->broker, buffer, sizeof(buffer), 0);
      if (n <= 0)
        break;
      if (client_open && proxy_answers(c, buffer, (size_t)n))
        client_open = 0; /* answers to a dead client are dropped */
    }
    while (head && head->due_ms <= proxy_now_ms()) {
      struct proxy_held *h = head;
      if (proxy_write_all(c->broker, h->data, h->len))
        goto out;
      head = h->next;
      if (!head)
        tail = &head;
      free(h);
    }
  }
out:
  while (head) {
    struct proxy_held *h = head;
    head = h->next;
    free(h);
  }
  free(c->frame);
  free(c->request);
  close(c->client);
  close(c->broker);
  free(c);
  return NULL;
}

static void *proxy_accept_main(void *arg)
{
  struct proxy_listener *l = arg;

  for (;;) {
    struct sockaddr_in to = {0};
    struct proxy_conn *c;
    pthread_t thread;
    int client = accept(l->fd, NULL, NULL);
    if (client < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    c = calloc(1, sizeof(*c));
    if (c)
      c->broker = socket(AF_INET, SOCK_STREAM, 0);
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)l->mock_port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!c || c->broker < 0 || connect(c->broker, (struct sockaddr *)&to, sizeof(to)) != 0) {
      if (c && c->broker >= 0)
        close(c->broker);
      free(c);
      close(client);
      continue;
    }
    c->client = client;
    for (unsigned s = 0; s < PROXY_CORRELATIONS; s++)
      c->sent[s].correlation = -1;
    if (pthread_create(&thread, NULL, proxy_conn_main, c) != 0) {
      close(c->broker);
      close(client);
      free(c);
      continue;
    }
    pthread_detach(thread);
  }
  return NULL;
}

/* Starts a proxy in front of each broker of `bootstrap` ("127.0.0.1:P,..."). Writes the proxies'
 * bootstrap into `out`. 0 or -1 with `err` set. */
static int proxy_start(const char *bootstrap, char *out, size_t out_size, char *err,
                       size_t err_size)
{
  const char *p = bootstrap;
  size_t used = 0;

  out[0] = '\0';
  while (p && *p && proxy_count < PROXY_MAX_BROKERS) {
    struct proxy_listener *l = &proxy_listeners[proxy_count];
    struct sockaddr_in addr = {0};
    socklen_t addr_len = sizeof(addr);
    pthread_t thread;
    const char *colon = strchr(p, ':');
    if (!colon) {
      snprintf(err, err_size, "cannot read the mock's bootstrap \"%s\"", bootstrap);
      return -1;
    }
    l->mock_port = (int)strtol(colon + 1, NULL, 10);
    l->fd = socket(AF_INET, SOCK_STREAM, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (l->fd < 0 || bind(l->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(l->fd, 64) != 0 || getsockname(l->fd, (struct sockaddr *)&addr, &addr_len) != 0) {
      snprintf(err, err_size, "proxy listener: %s", strerror(errno));
      return -1;
    }
    l->port = ntohs(addr.sin_port);
    used += (size_t)snprintf(out + used, out_size - used, "%s127.0.0.1:%d", used ? "," : "",
                             l->port);
    proxy_count++;
    if (pthread_create(&thread, NULL, proxy_accept_main, l) != 0) {
      snprintf(err, err_size, "proxy thread: %s", strerror(errno));
      return -1;
    }
    pthread_detach(thread);
    p = strchr(colon, ',');
    if (p)
      p++;
  }
  return 0;
}

static int parse_int(const char *option, const char *text, int low, int high, int *value)
{
  char *end = NULL;
  long parsed;

  errno = 0;
  parsed = text ? strtol(text, &end, 10) : 0;
  if (!text || errno || !end || *end || end == text || parsed < low || parsed > high) {
    fprintf(stderr, "pos-broker: %s needs a number from %d to %d, not \"%s\"\n", option, low,
            high, text ? text : "");
    return -1;
  }
  *value = (int)parsed;
  return 0;
}

/* One record read from the old cluster, kept until it is copied. */
struct broker_record {
  int32_t partition;
  int64_t offset;
  int64_t timestamp;
  char *key;
  size_t key_len;
  char *value; /* NULL: a tombstone */
  size_t value_len;
  rd_kafka_headers_t *headers;
  int keep;
};

struct broker_copy {
  const char *topic;
  struct broker_record *records;
  size_t count, capacity;
  int oom;
};

struct broker_compaction {
  uint64_t kept, dropped, moved; /* moved: a data record that landed at another offset */
  uint64_t failed;
};

static int broker_collect(void *arg, const rd_kafka_message_t *record)
{
  struct broker_copy *copy = arg;
  struct broker_record *r;
  rd_kafka_headers_t *headers = NULL;

  if (copy->count == copy->capacity) {
    size_t capacity = copy->capacity ? copy->capacity * 2 : 256;
    struct broker_record *grown = realloc(copy->records, capacity * sizeof(*grown));
    if (!grown) {
      copy->oom = 1;
      return -1;
    }
    copy->records = grown;
    copy->capacity = capacity;
  }
  r = &copy->records[copy->count];
  memset(r, 0, sizeof(*r));
  r->partition = record->partition;
  r->offset = record->offset;
  r->timestamp = rd_kafka_message_timestamp(record, NULL);
  r->keep = 1;
  if (record->key) {
    r->key = malloc(record->key_len + 1);
    if (!r->key)
      goto oom;
    memcpy(r->key, record->key, record->key_len);
    r->key_len = record->key_len;
  }
  if (record->payload) {
    r->value = malloc(record->len + 1);
    if (!r->value)
      goto oom;
    memcpy(r->value, record->payload, record->len);
    r->value_len = record->len;
  }
  if (rd_kafka_message_headers(record, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR)
    r->headers = rd_kafka_headers_copy(headers);
  copy->count++;
  return 0;
oom:
  free(r->key);
  free(r->value);
  copy->oom = 1;
  return -1;
}

static int broker_record_key_cmp(const void *a, const void *b)
{
  const struct broker_record *x = *(struct broker_record *const *)a;
  const struct broker_record *y = *(struct broker_record *const *)b;
  size_t common = x->key_len < y->key_len ? x->key_len : y->key_len;
  int c;

  if (x->partition != y->partition)
    return x->partition < y->partition ? -1 : 1;
  c = common ? memcmp(x->key, y->key, common) : 0;
  if (c)
    return c;
  if (x->key_len != y->key_len)
    return x->key_len < y->key_len ? -1 : 1;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Marks what compaction keeps: the newest record of each key of a partition, unless it is a
 * tombstone. Records without a key (Kafka refuses them on compacted topics) are kept. */
static int broker_compact_marks(struct broker_copy *copy)
{
  struct broker_record **order = calloc(copy->count + 1, sizeof(*order));
  size_t n = 0;

  if (!order)
    return -1;
  for (size_t i = 0; i < copy->count; i++) {
    if (copy->records[i].key)
      order[n++] = &copy->records[i];
  }
  qsort(order, n, sizeof(*order), broker_record_key_cmp);
  for (size_t i = 0; i < n; i++) {
    int newest = i + 1 == n || order[i + 1]->partition != order[i]->partition ||
                 order[i + 1]->key_len != order[i]->key_len ||
                 (order[i]->key_len &&
                  memcmp(order[i + 1]->key, order[i]->key, order[i]->key_len) != 0);
    order[i]->keep = newest && order[i]->value != NULL;
  }
  free(order);
  return 0;
}

static void broker_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque)
{
  struct broker_compaction *result = opaque;
  const struct broker_record *original = message->_private;

  (void)rk;
  if (message->err)
    result->failed++;
  else if (original && original->offset != message->offset)
    result->moved++;
}

static void broker_copy_free(struct broker_copy *copy)
{
  for (size_t i = 0; i < copy->count; i++) {
    free(copy->records[i].key);
    free(copy->records[i].value);
    if (copy->records[i].headers)
      rd_kafka_headers_destroy(copy->records[i].headers);
  }
  free(copy->records);
  memset(copy, 0, sizeof(*copy));
}

/* Reads `topic` from `reader` and writes what a compacting broker keeps of it through
 * `producer`. Data records carry their original offset to the delivery report (checked there).
 * Returns 0 or -1 with `err` set. */
static int broker_copy_topic(rd_kafka_t *reader, rd_kafka_t *producer, const char *topic,
                             int compacted, struct broker_compaction *result, char *err,
                             size_t err_size)
{
  struct broker_copy copy = {topic, NULL, 0, 0, 0};
  struct kafka_read_stats stats;
  atomic_int stop;
  int partitions = 0, rc = -1;

  atomic_init(&stop, 0);
  memset(&stats, 0, sizeof(stats));
  if (kafka_topic_partitions(reader, topic, 5000, &partitions, err, err_size))
    return -1;
  if (kafka_read_to_end(reader, topic, partitions, NULL, NULL, broker_collect, &copy, &stop,
                        10000, &stats, err, err_size)) {
    if (copy.oom)
      snprintf(err, err_size, "out of memory reading %s", topic);
    goto out;
  }
  if (compacted && broker_compact_marks(&copy)) {
    snprintf(err, err_size, "out of memory compacting %s", topic);
    goto out;
  }
  for (size_t i = 0; i < copy.count; i++) {
    struct broker_record *r = &copy.records[i];
    rd_kafka_resp_err_t kerr;
    /* Data records carry their original offset to the delivery report. A plain variable:
     * librdkafka's V_ macros cast their argument unparenthesised. */
    void *original = compacted ? NULL : r;
    int64_t timestamp = r->timestamp > 0 ? r->timestamp : 0;
    if (!r->keep) {
      result->dropped++;
      continue;
    }
    kerr = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(r->partition),
                             RD_KAFKA_V_KEY(r->key, r->key_len),
                             RD_KAFKA_V_VALUE(r->value, r->value_len),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_TIMESTAMP(timestamp),
                             RD_KAFKA_V_HEADERS(r->headers),
                             RD_KAFKA_V_OPAQUE(original), RD_KAFKA_V_END);
    if (kerr) {
      snprintf(err, err_size, "copying %s [%d] offset %" PRId64 ": %s", topic, (int)r->partition,
               r->offset, rd_kafka_err2str(kerr));
      goto out;
    }
    r->headers = NULL; /* the producer took them */
    result->kept++;
  }
  /* The records (their offsets) must outlive the delivery reports. */
  if (rd_kafka_flush(producer, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    snprintf(err, err_size, "copying %s: the new cluster did not take every record in 30 s",
             topic);
    goto out;
  }
  rc = 0;
out:
  broker_copy_free(&copy);
  return rc;
}

/* Moves to a new cluster holding what a compacting broker keeps of `*embedded` (see the top
 * of the file). On success replaces *embedded; on failure leaves it running. */
static int broker_compact(kafka_embedded **embedded, int brokers, int partitions,
                          const char *prefix, struct broker_compaction *result, char *err,
                          size_t err_size)
{
  kafka_embedded *fresh = kafka_embedded_start(brokers, partitions, prefix, err, err_size);
  rd_kafka_t *reader = NULL, *producer = NULL;
  rd_kafka_conf_t *conf = NULL;
  char why[256];
  int rc = -1;

  memset(result, 0, sizeof(*result));
  if (!fresh)
    return -1;
  reader = kafka_reader_new(kafka_embedded_bootstrap(*embedded), NULL, err, err_size);
  if (!reader)
    goto out;
  /* The collector's producer settings keep each partition's order (idempotence), which is
   * what keeps a data record at its offset. */
  conf = kafka_producer_conf(kafka_embedded_bootstrap(fresh), NULL, err, err_size);
  if (!conf)
    goto out;
  rd_kafka_conf_set_opaque(conf, result);
  rd_kafka_conf_set_dr_msg_cb(conf, broker_dr_cb);
  producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
  if (!producer) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, err_size, "producer for the new cluster: %s", why);
    goto out;
  }
  for (int t = 0; t < KAFKA_TOPIC_COUNT; t++) {
    char topic[256];
    if (kafka_topic_name(prefix, (enum kafka_topic)t, topic, sizeof(topic)) ||
        broker_copy_topic(reader, producer, topic, kafka_topic_compacted((enum kafka_topic)t),
                          result, err, err_size))
      goto out;
  }
  if (result->failed || result->moved) {
    snprintf(err, err_size,
             "%" PRIu64 " records not copied, %" PRIu64 " data records at another offset "
             "(was the old log trimmed at 5 MB per partition?)",
             result->failed, result->moved);
    goto out;
  }
  rc = 0;
out:
  if (producer)
    rd_kafka_destroy(producer);
  kafka_reader_destroy(reader);
  if (rc == 0) {
    kafka_embedded_stop(*embedded);
    *embedded = fresh;
  } else {
    kafka_embedded_stop(fresh);
  }
  return rc;
}

int main(int argc, char **argv)
{
  int brokers = 1, partitions = 4, signal_number = 0;
  const char *prefix = "pos.";
  kafka_embedded *embedded;
  sigset_t stop_signals;
  char err[512];

  /* --partition-of N ID...: where the collector puts each store (its producer's partitioner). */
  if (argc >= 3 && strcmp(argv[1], "--partition-of") == 0) {
    int count;
    if (parse_int("--partition-of", argv[2], 1, 1000, &count))
      return 2;
    for (int i = 3; i < argc; i++)
      printf("%s\t%d\n", argv[i],
             (int)rd_kafka_msg_partitioner_murmur2_random(NULL, argv[i], strlen(argv[i]), count,
                                                          NULL, NULL));
    return 0;
  }
  for (int i = 1; i < argc; i++) {
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--brokers") == 0) {
      if (parse_int("--brokers", value, 1, 16, &brokers))
        return 2;
      i++;
    } else if (strcmp(argv[i], "--partitions") == 0) {
      if (parse_int("--partitions", value, 1, 1000, &partitions))
        return 2;
      i++;
    } else if (strcmp(argv[i], "--produce-delay") == 0) {
      if (parse_int("--produce-delay", value, 1, 600000, &proxy_delay_ms))
        return 2;
      i++;
    } else if (strcmp(argv[i], "--topic-prefix") == 0) {
      if (!value) {
        fprintf(stderr, "pos-broker: --topic-prefix needs a value\n");
        return 2;
      }
      prefix = value;
      i++;
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "pos-broker: unknown option \"%s\"\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }

  /* Block the stop signals before any librdkafka thread exists, so that
   * they all inherit the mask and sigwait below is the one to see them. */
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

  embedded = kafka_embedded_start(brokers, partitions, prefix, err, sizeof(err));
  if (!embedded) {
    fprintf(stderr, "pos-broker: %s\n", err);
    return 1;
  }
  printf("bootstrap=%s\n", kafka_embedded_bootstrap(embedded));
  if (proxy_delay_ms > 0) {
    char delayed[PROXY_MAX_BROKERS * 24];
    if (proxy_start(kafka_embedded_bootstrap(embedded), delayed, sizeof(delayed), err,
                    sizeof(err))) {
      fprintf(stderr, "pos-broker: --produce-delay: %s\n", err);
      kafka_embedded_stop(embedded);
      return 1;
    }
    printf("delayed=%s\n", delayed);
    log_info("broker", "delaying", "delayed=%s delay_ms=%d", delayed, proxy_delay_ms);
  }
  fflush(stdout);
  log_info("broker", "ready", "bootstrap=%s brokers=%d partitions=%d topic_prefix=%s",
           kafka_embedded_bootstrap(embedded), brokers, partitions, prefix);

  for (;;) {
    struct broker_compaction result;
    if (sigwait(&stop_signals, &signal_number) != 0)
      continue;
    if (signal_number != SIGUSR1)
      break;
    if (broker_compact(&embedded, brokers, partitions, prefix, &result, err, sizeof(err))) {
      log_error("broker", "compaction_failed", "error=\"%s\" action=\"kept the old cluster\"",
                err);
      printf("compaction_failed\n");
    } else {
      log_info("broker", "compacted", "bootstrap=%s kept=%" PRIu64 " dropped=%" PRIu64,
               kafka_embedded_bootstrap(embedded), result.kept, result.dropped);
      printf("bootstrap=%s\ncompacted kept=%" PRIu64 " dropped=%" PRIu64 "\n",
             kafka_embedded_bootstrap(embedded), result.kept, result.dropped);
    }
    fflush(stdout);
  }
  log_info("broker", "stopping", "signal=%d", signal_number);
  kafka_embedded_stop(embedded);
  return 0;
}
