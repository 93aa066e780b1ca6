/*
 * ownership.c - the consumer group that assigns the data partitions to the
 * collector instances (ownership.h).
 *
 * The member is a librdkafka consumer whose queue wakes the loop through a
 * pipe (rd_kafka_queue_io_event_enable); its rebalance callback, served by
 * rd_kafka_consumer_poll on the loop, applies each change and records what
 * is owned. A timer
 * polls too, well within max.poll.interval.ms, so that a quiet member is
 * not taken for a stuck one and put out of the group.
 */
#include "kafka/ownership.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kafka/kafka.h"
#include "platform/log.h"
#include "platform/metrics.h"

/* How often the loop polls the member when nothing woke it. */
#define OWNERSHIP_POLL_MS 1000

struct ownership {
  uv_loop_t *loop;
  rd_kafka_t *rk;
  int wake_fds[2];
  uv_poll_t wake_poll;
  uv_timer_t tick;
  int handles_open;
  int closing;
  int partitions;
  int owned_count;
  uint64_t rebalances;
  uint8_t owned[OWNERSHIP_MAX_PARTITIONS];
  char instance_id[256];
  char topic[256];
  void (*on_change)(void *arg);
  void *arg;
  metrics_family *owned_family; /* pos_collector_owned_partition{partition} */
  metrics_series *owned_total, *rebalances_total;
};

int32_t ownership_store_partition(const char *store_id, int partitions)
{
  if (!store_id || partitions <= 0)
    return 0;
  /* rkt is only read for its partition count by partitioners that need
   * more; murmur2_random does not look at it. */
  return rd_kafka_msg_partitioner_murmur2_random(NULL, store_id, strlen(store_id), partitions, NULL,
                                                 NULL);
}

int ownership_partition_count(const ownership *o) { return o ? o->partitions : 0; }

int ownership_owns(const ownership *o, int32_t partition)
{
  return o && partition >= 0 && partition < o->partitions && o->owned[partition];
}

int ownership_owned_count(const ownership *o) { return o ? o->owned_count : 0; }

/* "0,1,5" of a partition list of our topic, into out. */
static void ownership_list_text(const rd_kafka_topic_partition_list_t *parts, char *out,
                                size_t out_size)
{
  size_t at = 0;

  out[0] = '\0';
  for (int i = 0; parts && i < parts->cnt && at + 12 < out_size; i++) {
    int n =
        snprintf(out + at, out_size - at, "%s%" PRId32, at ? "," : "", parts->elems[i].partition);
    if (n < 0)
      break;
    at += (size_t)n;
  }
}

/* "0,1,5" of what is owned now, into out. */
static void ownership_owned_text(const ownership *o, char *out, size_t out_size)
{
  size_t at = 0;

  out[0] = '\0';
  for (int p = 0; p < o->partitions && at + 12 < out_size; p++) {
    int n;
    if (!o->owned[p])
      continue;
    n = snprintf(out + at, out_size - at, "%s%d", at ? "," : "", p);
    if (n < 0)
      break;
    at += (size_t)n;
  }
}

static void ownership_set(ownership *o, const rd_kafka_topic_partition_list_t *parts, int owned)
{
  for (int i = 0; parts && i < parts->cnt; i++) {
    int32_t p = parts->elems[i].partition;
    char label[16];
    if (strcmp(parts->elems[i].topic, o->topic) != 0 || p < 0 || p >= o->partitions)
      continue;
    if (o->owned[p] != owned)
      o->owned_count += owned ? 1 : -1;
    o->owned[p] = (uint8_t)owned;
    snprintf(label, sizeof(label), "%" PRId32, p);
    metrics_set(metrics_series1(o->owned_family, label), owned);
  }
  metrics_set(o->owned_total, o->owned_count);
}

/* Owns nothing any more. */
static void ownership_clear(ownership *o)
{
  for (int p = 0; p < o->partitions; p++) {
    char label[16];
    if (!o->owned[p])
      continue;
    o->owned[p] = 0;
    snprintf(label, sizeof(label), "%d", p);
    metrics_set(metrics_series1(o->owned_family, label), 0);
  }
  o->owned_count = 0;
  metrics_set(o->owned_total, 0);
}

/* Served on the loop by rd_kafka_consumer_poll (and during close). */
static void ownership_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                   rd_kafka_topic_partition_list_t *parts, void *opaque)
{
  ownership *o = opaque;
  int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
  int assign = err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
  int lost = !assign && rd_kafka_assignment_lost(rk);
  rd_kafka_error_t *error = NULL;
  rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
  char changed[512], owned[512];

  if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS && err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
    log_warn("ownership", "rebalance_error", "error=%s", rd_kafka_err2name(err));
    kerr = rd_kafka_assign(rk, NULL);
    ownership_clear(o);
  } else {
    if (cooperative)
      error = assign ? rd_kafka_incremental_assign(rk, parts)
                     : rd_kafka_incremental_unassign(rk, parts);
    else
      kerr = rd_kafka_assign(rk, assign ? parts : NULL);
    if (!assign && !cooperative)
      ownership_clear(o); /* eager: everything is revoked */
    else
      ownership_set(o, parts, assign);
  }
  if (error) {
    log_warn("ownership", "assign_failed", "error=\"%s\"", rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
  } else if (kerr) {
    log_warn("ownership", "assign_failed", "error=%s", rd_kafka_err2name(kerr));
  }
  o->rebalances++;
  metrics_inc(o->rebalances_total);
  ownership_list_text(parts, changed, sizeof(changed));
  ownership_owned_text(o, owned, sizeof(owned));
  log_info("ownership", assign ? "partitions_assigned" : "partitions_revoked",
           "instance=%s topic=%s partitions=%s owned=%s owned_count=%d of=%d lost=%d",
           o->instance_id, o->topic, changed[0] ? changed : "-", owned[0] ? owned : "-",
           o->owned_count, o->partitions, lost);
  if (o->on_change && !o->closing)
    o->on_change(o->arg);
}

static void ownership_poll(ownership *o)
{
  rd_kafka_message_t *message;

  /* The topic holds no records; anything that comes is an event or an error. */
  while (o->rk && (message = rd_kafka_consumer_poll(o->rk, 0)) != NULL) {
    if (message->err && message->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
      log_warn("ownership", "consumer_error", "error=%s", rd_kafka_err2name(message->err));
    rd_kafka_message_destroy(message);
  }
}

static void ownership_wake_cb(uv_poll_t *handle, int status, int events)
{
  ownership *o = handle->data;
  char drain[64];

  (void)status;
  (void)events;
  while (read(o->wake_fds[0], drain, sizeof(drain)) > 0)
    ;
  ownership_poll(o);
}

static void ownership_tick_cb(uv_timer_t *handle) { ownership_poll(handle->data); }

static void ownership_closed(uv_handle_t *handle)
{
  ownership *o = handle->data;

  if (--o->handles_open > 0)
    return;
  if (o->wake_fds[0] >= 0)
    close(o->wake_fds[0]);
  if (o->wake_fds[1] >= 0)
    close(o->wake_fds[1]);
  free(o);
}

static int ownership_conf(const struct ownership_options *options, rd_kafka_conf_t *conf, char *err,
                          size_t err_size)
{
  char session[24], heartbeat[24];
  uint64_t beat = options->session_timeout_ms / 10;

  snprintf(session, sizeof(session), "%" PRIu64, options->session_timeout_ms);
  snprintf(heartbeat, sizeof(heartbeat), "%" PRIu64, beat < 100 ? 100 : beat);
  return kafka_conf_set(conf, "group.id", options->group, err, err_size) ||
         kafka_conf_set(conf, "client.id", options->instance_id, err, err_size) ||
         kafka_conf_set(conf, "session.timeout.ms", session, err, err_size) ||
         kafka_conf_set(conf, "heartbeat.interval.ms", heartbeat, err, err_size) ||
         /* Not cooperative-sticky, which would move only the partitions that must move:
          * librdkafka before 2.3.0 (Debian 12 has 2.0.2) aborts when such a member is
          * destroyed between joining and its first assignment (librdkafka issue 4312), as a
          * collector stopped in its first seconds is. The callback handles both protocols. */
         kafka_conf_set(conf, "partition.assignment.strategy", "roundrobin", err, err_size) ||
         kafka_conf_set(conf, "enable.auto.commit", "false", err, err_size) ||
         kafka_conf_set(conf, "enable.auto.offset.store", "false", err, err_size) ||
         kafka_conf_set(conf, "auto.offset.reset", "latest", err, err_size) ||
         kafka_conf_set(conf, "allow.auto.create.topics", "false", err, err_size);
}

/* The partition counts of the ownership and sales topics; 0 or -1 with `err` set. */
static int ownership_check_topic(ownership *o, const struct ownership_options *options, char *err,
                                 size_t err_size)
{
  int owners = 0, sales = 0;

  if (kafka_topic_partitions(o->rk, options->topic, 5000, &owners, err, err_size) ||
      kafka_topic_partitions(o->rk, options->sales_topic, 5000, &sales, err, err_size))
    return -1;
  if (owners == 0) {
    snprintf(err, err_size,
             "topic %s does not exist: create it with as many partitions as %s "
             "(%d) for the collectors to share the partitions between them",
             options->topic, options->sales_topic, sales);
    return -1;
  }
  if (owners != sales) {
    snprintf(err, err_size,
             "topic %s has %d partitions but %s has %d: they must be as many "
             "(a partition of %s says who writes that partition of %s); recreate %s with %d",
             options->topic, owners, options->sales_topic, sales, options->topic,
             options->sales_topic, options->topic, sales);
    return -1;
  }
  if (owners > OWNERSHIP_MAX_PARTITIONS) {
    snprintf(err, err_size,
             "topic %s has %d partitions, more than the %d this collector "
             "handles",
             options->topic, owners, OWNERSHIP_MAX_PARTITIONS);
    return -1;
  }
  o->partitions = owners;
  return 0;
}

ownership *ownership_create(uv_loop_t *loop, const struct ownership_options *options, char *err,
                            size_t err_size)
{
  ownership *o = calloc(1, sizeof(*o));
  rd_kafka_conf_t *conf = NULL;
  rd_kafka_topic_partition_list_t *topics = NULL;
  rd_kafka_queue_t *queue;
  rd_kafka_resp_err_t kerr;
  char why[512];

  if (!o) {
    snprintf(err, err_size, "out of memory joining the collectors' group");
    return NULL;
  }
  o->loop = loop;
  o->wake_fds[0] = o->wake_fds[1] = -1;
  o->on_change = options->on_change;
  o->arg = options->arg;
  snprintf(o->instance_id, sizeof(o->instance_id), "%s", options->instance_id);
  snprintf(o->topic, sizeof(o->topic), "%s", options->topic);
  o->owned_family = metrics_gauge(metrics_global(), "pos_collector_owned_partition",
                                  "1 for each partition of pos.sales.v1 the consumer group "
                                  "assigns this instance, 0 for one it had.",
                                  "partition");
  o->owned_total = metrics_series1(
      metrics_gauge(metrics_global(), "pos_collector_owned_partitions",
                    "How many partitions of pos.sales.v1 the group assigns this instance.", NULL),
      NULL);
  o->rebalances_total = metrics_series1(
      metrics_counter(metrics_global(), "pos_collector_ownership_rebalances_total",
                      "Changes of this instance's partitions (assigned or revoked).", NULL),
      NULL);
  conf = kafka_base_conf(options->brokers, options->kafka_debug, err, err_size);
  if (!conf || ownership_conf(options, conf, err, err_size))
    goto fail;
  rd_kafka_conf_set_rebalance_cb(conf, ownership_rebalance_cb);
  rd_kafka_conf_set_opaque(conf, o);
  o->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
  if (!o->rk) {
    snprintf(err, err_size, "cannot create the collectors' group member for %s: %s",
             options->brokers, why);
    goto fail;
  }
  conf = NULL;
  rd_kafka_poll_set_consumer(o->rk);
  if (ownership_check_topic(o, options, err, err_size))
    goto fail;
  if (pipe(o->wake_fds) != 0 || fcntl(o->wake_fds[0], F_SETFL, O_NONBLOCK) != 0 ||
      fcntl(o->wake_fds[1], F_SETFL, O_NONBLOCK) != 0) {
    snprintf(err, err_size, "pipe for the collectors' group: %s", strerror(errno));
    goto fail;
  }
  queue = rd_kafka_queue_get_consumer(o->rk);
  rd_kafka_queue_io_event_enable(queue, o->wake_fds[1], "o", 1);
  rd_kafka_queue_destroy(queue);
  topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, options->topic, RD_KAFKA_PARTITION_UA);
  kerr = rd_kafka_subscribe(o->rk, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (kerr) {
    snprintf(err, err_size, "joining group %s on %s: %s", options->group, options->topic,
             rd_kafka_err2str(kerr));
    goto fail;
  }
  uv_poll_init(loop, &o->wake_poll, o->wake_fds[0]);
  uv_timer_init(loop, &o->tick);
  o->wake_poll.data = o->tick.data = o;
  o->handles_open = 2;
  uv_poll_start(&o->wake_poll, UV_READABLE, ownership_wake_cb);
  uv_timer_start(&o->tick, ownership_tick_cb, OWNERSHIP_POLL_MS, OWNERSHIP_POLL_MS);
  log_info("ownership", "joining",
           "instance=%s group=%s topic=%s partitions=%d "
           "session_timeout_ms=%" PRIu64,
           o->instance_id, options->group, o->topic, o->partitions, options->session_timeout_ms);
  return o;
fail:
  if (conf)
    rd_kafka_conf_destroy(conf);
  if (o->rk)
    rd_kafka_destroy(o->rk);
  if (o->wake_fds[0] >= 0)
    close(o->wake_fds[0]);
  if (o->wake_fds[1] >= 0)
    close(o->wake_fds[1]);
  free(o);
  return NULL;
}

void ownership_destroy(ownership *o)
{
  rd_kafka_resp_err_t kerr;

  if (!o)
    return;
  o->closing = 1;
  /* Leaves the group: the coordinator reassigns our partitions at once
   * instead of after session_timeout. The revoke is served in here. */
  kerr = rd_kafka_consumer_close(o->rk);
  if (kerr)
    log_warn("ownership", "leave_failed", "error=%s", rd_kafka_err2name(kerr));
  rd_kafka_destroy(o->rk);
  o->rk = NULL;
  log_info("ownership", "left", "instance=%s group_changes=%" PRIu64, o->instance_id,
           o->rebalances);
  uv_close((uv_handle_t *)&o->wake_poll, ownership_closed);
  uv_close((uv_handle_t *)&o->tick, ownership_closed);
}
