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
/* How often the topics' partition counts are asked for again while Kafka does not answer. */
#define OWNERSHIP_CHECK_RETRY_MS 5000

struct ownership {
  uv_loop_t *loop;
  rd_kafka_t *rk;
  int wake_fds[2];
  uv_poll_t wake_poll;
  uv_timer_t tick;
  int handles_open;
  int closing;
  /* The topics' partition counts, asked on a worker (a metadata request may take seconds
   * while Kafka is down: not on the loop, not before the collector listens). */
  uv_work_t check_work;
  int check_running, checked, destroy_deferred;
  uint64_t next_check_ms;
  int check_rc, check_transient;
  int check_owners;
  char check_err[2048];
  char sales_topic[256];
  int partitions; /* of the ownership topic, once checked (0 before) */
  int off;        /* out of the group: the topic is missing or of another count */
  int leave;      /* destroy: leave the group (else let the session time out) */
  /* The member id at the last assignment: another one means this member was put out of the
   * group and joined again (what it had may have been another's meanwhile). */
  char member_id[256];
  int rejoined;
  int owned_count;
  uint64_t rebalances;
  uint8_t owned[OWNERSHIP_MAX_PARTITIONS];
  char instance_id[256];
  char topic[256];
  void (*on_change)(void *arg);
  void (*on_revoke)(void *arg, int lost);
  void *arg;
  /* A revoke the member has not acted on yet (ownership_released does): eager (everything)
   * or cooperative (these partitions). */
  int release_pending;
  rd_kafka_topic_partition_list_t *release_parts;
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

int ownership_off(const ownership *o) { return !o || o->off; }

const char *ownership_off_reason(const ownership *o)
{
  return o && o->off ? o->check_err : "the collectors' group is not joined";
}

int ownership_rejoined(const ownership *o) { return o && o->rejoined; }

int ownership_owns(const ownership *o, int32_t partition)
{
  return o && partition >= 0 && partition < OWNERSHIP_MAX_PARTITIONS && o->owned[partition];
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
  for (int p = 0; p < OWNERSHIP_MAX_PARTITIONS && at + 12 < out_size; p++) {
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
    if (strcmp(parts->elems[i].topic, o->topic) != 0 || p < 0 || p >= OWNERSHIP_MAX_PARTITIONS)
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
  for (int p = 0; p < OWNERSHIP_MAX_PARTITIONS; p++) {
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
  } else if (assign) {
    char *member = rd_kafka_memberid(rk);
    o->rejoined = member && o->member_id[0] && strcmp(member, o->member_id) != 0;
    snprintf(o->member_id, sizeof(o->member_id), "%s", member ? member : "");
    if (member)
      rd_kafka_mem_free(rk, member);
    if (cooperative)
      error = rd_kafka_incremental_assign(rk, parts);
    else
      kerr = rd_kafka_assign(rk, parts);
    ownership_set(o, parts, 1);
  } else {
    /* Not given up here: the ingest first lets what it produced for them land
     * (ownership_released). */
    if (cooperative)
      ownership_set(o, parts, 0);
    else
      ownership_clear(o); /* eager: everything is revoked */
    if (o->release_parts)
      rd_kafka_topic_partition_list_destroy(o->release_parts);
    o->release_parts = cooperative ? rd_kafka_topic_partition_list_copy(parts) : NULL;
    o->release_pending = 1;
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
  if (o->release_pending) {
    if (o->on_revoke && !o->closing)
      o->on_revoke(o->arg, lost);
    else
      ownership_released(o);
  } else if (o->on_change && !o->closing) {
    o->on_change(o->arg);
  }
}

void ownership_released(ownership *o)
{
  rd_kafka_error_t *error = NULL;
  rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;

  if (!o || !o->release_pending || !o->rk)
    return;
  o->release_pending = 0;
  if (o->release_parts)
    error = rd_kafka_incremental_unassign(o->rk, o->release_parts);
  else
    kerr = rd_kafka_assign(o->rk, NULL);
  if (o->release_parts)
    rd_kafka_topic_partition_list_destroy(o->release_parts);
  o->release_parts = NULL;
  if (error) {
    log_warn("ownership", "release_failed", "error=\"%s\"", rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
  } else if (kerr) {
    log_warn("ownership", "release_failed", "error=%s", rd_kafka_err2name(kerr));
  } else {
    log_info("ownership", "released", "instance=%s", o->instance_id);
  }
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

static void ownership_check_start(ownership *o);

static void ownership_tick_cb(uv_timer_t *handle)
{
  ownership_poll(handle->data);
  ownership_check_start(handle->data);
}

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

/* Worker: the partition counts of the ownership and sales topics, and what is wrong. */
static void ownership_check_work(uv_work_t *work)
{
  ownership *o = work->data;
  int owners = 0, sales = 0;

  o->check_rc = -1;
  o->check_transient = 0;
  if (kafka_topic_partitions(o->rk, o->topic, 5000, &owners, o->check_err, sizeof(o->check_err)) ||
      kafka_topic_partitions(o->rk, o->sales_topic, 5000, &sales, o->check_err,
                             sizeof(o->check_err))) {
    o->check_transient = 1; /* Kafka did not answer: asked again */
    return;
  }
  if (owners == 0) {
    snprintf(o->check_err, sizeof(o->check_err),
             "topic %s does not exist: create it with as many partitions as %s (%d) for the "
             "collectors to share the partitions between them",
             o->topic, o->sales_topic, sales);
  } else if (owners != sales) {
    snprintf(o->check_err, sizeof(o->check_err),
             "topic %s has %d partitions but %s has %d: they must be as many (a partition of "
             "%s says who writes that partition of %s); recreate %s with %d",
             o->topic, owners, o->sales_topic, sales, o->topic, o->sales_topic, o->topic, sales);
  } else if (owners > OWNERSHIP_MAX_PARTITIONS) {
    snprintf(o->check_err, sizeof(o->check_err),
             "topic %s has %d partitions, more than the %d this collector handles", o->topic,
             owners, OWNERSHIP_MAX_PARTITIONS);
  } else {
    o->check_owners = owners;
    o->check_rc = 0;
  }
}

static void ownership_finish_destroy(ownership *o);

/* Loop: what the check found. A topic missing or of another count leaves the group. */
static void ownership_check_done(uv_work_t *work, int status)
{
  ownership *o = work->data;
  char quoted[2200];

  o->check_running = 0;
  if (o->destroy_deferred) {
    ownership_finish_destroy(o);
    return;
  }
  if (status != 0 || o->check_transient) {
    o->next_check_ms = uv_now(o->loop) + OWNERSHIP_CHECK_RETRY_MS;
    log_info("ownership", "topics_unknown", "topic=%s reason=%s retry_in_ms=%d", o->topic,
             log_quote(o->check_err, quoted, sizeof(quoted)), OWNERSHIP_CHECK_RETRY_MS);
    return;
  }
  o->checked = 1;
  if (o->check_rc != 0) {
    /* Without the topic (or with another count) the assignment would mean nothing. */
    rd_kafka_unsubscribe(o->rk);
    log_warn("ownership", "fleet_off",
             "topic=%s reason=%s action=\"create or fix the topic and restart: until then this "
             "instance is in no group\"",
             o->topic, log_quote(o->check_err, quoted, sizeof(quoted)));
    o->off = 1;
    ownership_clear(o);
    if (o->on_change)
      o->on_change(o->arg);
    return;
  }
  o->partitions = o->check_owners;
  log_info("ownership", "topics_checked", "topic=%s partitions=%d as=%s", o->topic, o->partitions,
           o->sales_topic);
  /* An assignment that came before the count is acted on now. */
  if (o->on_change && o->owned_count > 0)
    o->on_change(o->arg);
}

static void ownership_check_start(ownership *o)
{
  if (o->checked || o->check_running || o->closing || uv_now(o->loop) < o->next_check_ms)
    return;
  o->check_work.data = o;
  if (uv_queue_work(o->loop, &o->check_work, ownership_check_work, ownership_check_done) == 0)
    o->check_running = 1;
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
  o->on_revoke = options->on_revoke;
  o->arg = options->arg;
  snprintf(o->instance_id, sizeof(o->instance_id), "%s", options->instance_id);
  snprintf(o->topic, sizeof(o->topic), "%s", options->topic);
  snprintf(o->sales_topic, sizeof(o->sales_topic), "%s", options->sales_topic);
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
  ownership_check_start(o);
  log_info("ownership", "joining", "instance=%s group=%s topic=%s session_timeout_ms=%" PRIu64,
           o->instance_id, options->group, o->topic, options->session_timeout_ms);
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

void ownership_destroy(ownership *o, int leave)
{
  if (!o)
    return;
  o->closing = 1;
  o->leave = leave;
  uv_timer_stop(&o->tick);
  /* The check's worker uses the handle: finished when it is back (at most its 10 s). */
  if (o->check_running) {
    o->destroy_deferred = 1;
    return;
  }
  ownership_finish_destroy(o);
}

static void ownership_finish_destroy(ownership *o)
{
  rd_kafka_resp_err_t kerr;

  /* Leaves the group: the coordinator reassigns our partitions at once
   * instead of after session_timeout. The revoke is served in here. A
   * release still waited for is given now: the ingest is gone, its last
   * records with it. */
  ownership_released(o);
  if (o->leave) {
    kerr = rd_kafka_consumer_close(o->rk);
    if (kerr)
      log_warn("ownership", "leave_failed", "error=%s", rd_kafka_err2name(kerr));
    rd_kafka_destroy(o->rk);
  } else {
    log_warn("ownership", "not_leaving",
             "instance=%s why=\"records of this instance may still land\" effect=\"its "
             "partitions move after the session timeout, not at once\"",
             o->instance_id);
    rd_kafka_destroy_flags(o->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
  }
  o->rk = NULL;
  log_info("ownership", "left", "instance=%s group_changes=%" PRIu64, o->instance_id,
           o->rebalances);
  uv_close((uv_handle_t *)&o->wake_poll, ownership_closed);
  uv_close((uv_handle_t *)&o->tick, ownership_closed);
}
