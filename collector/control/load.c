/*
 * load.c - rebuilds the commands and the fleet view at start, on a thread
 * of its own so that the loop keeps serving: pos.control.v1 and
 * pos.agent-status.v1 read from the beginning to the end each has when the
 * read starts (the latest record of a key wins, a null value deletes). The
 * loop then adopts the result, keeping any heartbeat it took meanwhile that
 * is newer, and only then serves the admin API and puts commands in acks.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/control_int.h"
#include "kafka/kafka.h"
#include "platform/clock.h"
#include "platform/log.h"

#define CONTROL_LOAD_RETRY_MS 2000
#define CONTROL_LOAD_STALL_MS 30000
#define CONTROL_METADATA_TIMEOUT_MS 5000

/* "<store_id>/command/<command_id>": 1 with the id's offset in the key, else 0. */
static int control_command_key(const rd_kafka_message_t *record, char *command_id,
                               size_t size)
{
  const char *key = record->key;
  static const char marker[] = "/command/";

  for (size_t i = 0; key && i + sizeof(marker) - 1 < record->key_len; i++) {
    if (memcmp(key + i, marker, sizeof(marker) - 1) == 0) {
      size_t len = record->key_len - i - (sizeof(marker) - 1);
      if (len == 0 || len >= size)
        return 0;
      memcpy(command_id, key + i + sizeof(marker) - 1, len);
      command_id[len] = '\0';
      return 1;
    }
  }
  return 0;
}

/* "<store_id>/enrol-token/<token_id>": kept, replaced or deleted in the map. */
static int control_load_token(struct control_loader *loader, const rd_kafka_message_t *record)
{
  static const char marker[] = "/enrol-token/";
  const char *key = record->key;
  char token_id[CONTROL_TOKEN_ID_HEX + 1];
  Pos__V1__EnrolToken *proto = NULL;

  for (size_t i = 0; key && i + sizeof(marker) - 1 < record->key_len; i++) {
    size_t len = record->key_len - i - (sizeof(marker) - 1);
    if (memcmp(key + i, marker, sizeof(marker) - 1) != 0)
      continue;
    if (len != CONTROL_TOKEN_ID_HEX)
      return 1;
    memcpy(token_id, key + i + sizeof(marker) - 1, len);
    token_id[len] = '\0';
    if (record->payload &&
        !(proto = pos__v1__enrol_token__unpack(NULL, record->len, record->payload)))
      return 1;
    if (control__token_put(&loader->map, token_id, record->payload ? proto : NULL))
      log_warn("control", "enrol_token_skipped", "token_id=%s reason=\"out of memory or over "
               "%u tokens\"", token_id, CONTROL_MAX_TOKENS);
    if (proto)
      pos__v1__enrol_token__free_unpacked(proto, NULL);
    return 1;
  }
  return 0;
}

/* "<store_id>/decommissioned": the store's flag set or cleared in the map. */
static int control_load_decommission(struct control_loader *loader,
                                     const rd_kafka_message_t *record)
{
  static const char marker[] = "/decommissioned";
  const char *key = record->key;
  char store_id[CONTROL_ID_MAX + 1];
  Pos__V1__StoreDecommission *proto = NULL;
  size_t len;

  if (!key || record->key_len <= sizeof(marker) - 1 ||
      memcmp(key + record->key_len - (sizeof(marker) - 1), marker, sizeof(marker) - 1) != 0)
    return 0;
  len = record->key_len - (sizeof(marker) - 1);
  if (len > CONTROL_ID_MAX || memchr(key, '/', len))
    return 1;
  memcpy(store_id, key, len);
  store_id[len] = '\0';
  if (record->payload &&
      !(proto = pos__v1__store_decommission__unpack(NULL, record->len, record->payload)))
    return 1;
  if (control__decommission_put(&loader->map, store_id, proto))
    log_warn("control", "decommission_skipped", "store=%s reason=\"out of memory or over %u "
             "stores\"", store_id, CONTROL_MAX_STORES);
  if (proto)
    pos__v1__store_decommission__free_unpacked(proto, NULL);
  return 1;
}

static int control_load_command(void *arg, const rd_kafka_message_t *record)
{
  struct control_loader *loader = arg;
  char command_id[CONTROL_COMMAND_ID_MAX + 1];
  Pos__V1__Command *proto;
  struct control_command *command;

  if (control_load_token(loader, record) || control_load_decommission(loader, record))
    return 0;
  if (!control_command_key(record, command_id, sizeof(command_id)))
    return 0; /* a rebase (the ingest's), or not ours */
  if (!record->payload) {
    control__command_remove(&loader->map, command_id);
    return 0;
  }
  proto = pos__v1__command__unpack(NULL, record->len, record->payload);
  if (!proto)
    return 0;
  command = control__command_from_proto(proto);
  pos__v1__command__free_unpacked(proto, NULL);
  if (command && strcmp(command->command_id, command_id) == 0) {
    loader->commands_read++;
    /* One command that does not fit must not stop the load (and the admin API) for good:
     * it is skipped, and said. */
    if (control__command_put(&loader->map, command)) {
      loader->commands_skipped++;
      log_warn("control", "command_skipped", "command=%s topic=%s offset=%" PRId64 " reason=\"out "
               "of memory or over %zu commands\" hint=\"lower [control] keep_finished\"",
               command_id, loader->topics[0], record->offset, loader->map.max_commands);
    }
    return 0;
  }
  control__command_free(command);
  return 0;
}

static int control_load_heartbeat(void *arg, const rd_kafka_message_t *record)
{
  struct control_loader *loader = arg;
  char store_id[CONTROL_ID_MAX + 1], device_id[CONTROL_ID_MAX + 1];
  const char *key = record->key, *slash;
  Pos__V1__Heartbeat *heartbeat;
  struct control_store *store;
  struct control_device *device;

  slash = key ? memchr(key, '/', record->key_len) : NULL;
  if (!slash || slash == key || (size_t)(slash - key) > CONTROL_ID_MAX ||
      record->key_len - (size_t)(slash - key) - 1 > CONTROL_ID_MAX ||
      record->key_len - (size_t)(slash - key) - 1 == 0)
    return 0; /* a store-keyed heartbeat of before issue 9, or not ours */
  memcpy(store_id, key, (size_t)(slash - key));
  store_id[slash - key] = '\0';
  memcpy(device_id, slash + 1, record->key_len - (size_t)(slash - key) - 1);
  device_id[record->key_len - (size_t)(slash - key) - 1] = '\0';
  if (!record->payload) {
    store = control__store_find(&loader->map, store_id);
    device = store ? control__device_find(store, device_id) : NULL;
    if (device && device->heartbeat) {
      pos__v1__heartbeat__free_unpacked(device->heartbeat, NULL);
      device->heartbeat = NULL;
    }
    return 0;
  }
  heartbeat = pos__v1__heartbeat__unpack(NULL, record->len, record->payload);
  if (!heartbeat)
    return 0;
  loader->heartbeats_read++;
  /* The log's order is the order they were taken: a later record replaces the one kept.
   * received_ms (set by the collector) decides against what the loop took meanwhile. */
  store = control__store_find(&loader->map, store_id);
  device = store ? control__device_find(store, device_id) : NULL;
  if (device && device->heartbeat) {
    pos__v1__heartbeat__free_unpacked(device->heartbeat, NULL);
    device->heartbeat = NULL;
  }
  return control__fleet_take(&loader->map, store_id, device_id, heartbeat);
}

/* One read of both topics into loader->map. 0, or -1 with `err`. */
static int control_load_once(struct control_loader *loader, char *err, size_t err_size)
{
  static const kafka_record_fn fns[2] = {control_load_command, control_load_heartbeat};
  struct kafka_read_stats stats;
  rd_kafka_t *reader = kafka_reader_new(loader->brokers, loader->debug, err, err_size);
  int rc = -1, partitions;

  if (!reader)
    return -1;
  for (int t = 0; t < 2; t++) {
    if (kafka_topic_partitions(reader, loader->topics[t], CONTROL_METADATA_TIMEOUT_MS,
                               &partitions, err, err_size))
      goto out;
    if (partitions == 0) {
      log_warn("control", "topic_missing", "topic=%s hint=\"create it (the collector does not "
               "create topics on a real cluster)\"", loader->topics[t]);
      continue;
    }
    memset(&stats, 0, sizeof(stats));
    if (kafka_read_to_end(reader, loader->topics[t], partitions, NULL, NULL, fns[t], loader,
                          &loader->stop, CONTROL_LOAD_STALL_MS, &stats, err, err_size))
      goto out;
  }
  rc = 0;
out:
  kafka_reader_destroy(reader);
  return rc;
}

static void control_loader_main(void *arg)
{
  struct control_loader *loader = arg;
  char err[512], quoted[600];
  int attempt = 0;

  loader->rc = -1;
  while (!atomic_load(&loader->stop)) {
    attempt++;
    loader->commands_skipped = 0;
    snprintf(err, sizeof(err), "out of memory");
    if (control__map_init(&loader->map) == 0) {
      /* Immutable once the control is created: safe to read from this thread. */
      loader->map.max_commands = loader->c->max_commands;
      loader->rc = control_load_once(loader, err, sizeof(err));
    }
    if (loader->rc == 0)
      break;
    control__map_free(&loader->map);
    loader->commands_read = loader->heartbeats_read = 0;
    if (atomic_load(&loader->stop))
      break;
    log_warn("control", "load_retry", "attempt=%d error=%s retry_in_ms=%d", attempt,
             log_quote(err, quoted, sizeof(quoted)), CONTROL_LOAD_RETRY_MS);
    for (int waited = 0; waited < CONTROL_LOAD_RETRY_MS && !atomic_load(&loader->stop);
         waited += 100)
      uv_sleep(100);
  }
  uv_async_send(&loader->c->loaded_async);
}

/* Moves what the loop took during the load into the loaded map, which becomes the live one. */
static void control_adopt(control *c, struct control_loader *loader)
{
  for (size_t b = 0; b < c->map.bucket_count; b++) {
    for (struct control_store *s = c->map.stores[b]; s; s = s->next) {
      for (size_t i = 0; i < s->device_count; i++) {
        struct control_device *live = &s->devices[i];
        struct control_store *store;
        struct control_device *device;
        if (live->heartbeat) {
          control__fleet_take(&loader->map, s->store_id, live->device_id, live->heartbeat);
          live->heartbeat = NULL;
        }
        store = control__store_get(&loader->map, s->store_id);
        device = store ? control__device_get(store, live->device_id) : NULL;
        if (device && live->last_batch_ms > device->last_batch_ms)
          device->last_batch_ms = live->last_batch_ms;
      }
    }
  }
  control__map_free(&c->map);
  c->map = loader->map;
  memset(&loader->map, 0, sizeof(loader->map));
}

/*
 * Progress between changes of state is in the devices' latest heartbeats,
 * not in pos.control.v1: the commands take it back from them. A state the
 * heartbeats prove and pos.control.v1 lacks (its record was lost with the
 * previous run) is produced now.
 */
static void control_take_loaded_reports(control *c)
{
  for (size_t b = 0; b < c->map.bucket_count; b++) {
    for (struct control_store *s = c->map.stores[b]; s; s = s->next) {
      for (size_t i = 0; i < s->device_count; i++) {
        if (s->devices[i].heartbeat)
          control__take_reports(c, s->devices[i].heartbeat);
      }
      control__commit_store(c, s);
    }
  }
}

static void control_loaded_cb(uv_async_t *handle)
{
  control *c = handle->data;
  struct control_loader *loader = c->loader;

  if (!loader)
    return;
  uv_thread_join(&loader->thread);
  c->loader = NULL;
  if (loader->rc == 0) {
    control_adopt(c, loader);
    control_take_loaded_reports(c);
    c->ready = 1;
    control__prune(c, 1);
    log_info("control", "loaded", "commands=%" PRIu64 " heartbeats=%" PRIu64 " stores=%zu "
             "commands_kept=%zu commands_skipped=%" PRIu64 " enrol_tokens=%zu",
             loader->commands_read, loader->heartbeats_read, c->map.store_count,
             c->map.command_count, loader->commands_skipped, c->map.token_count);
  }
  control__map_free(&loader->map);
  free(loader->brokers);
  free(loader->debug);
  free(loader);
}

int control__loader_start(control *c, const char *brokers, const char *topic_prefix,
                          const char *debug, char *err, size_t err_size)
{
  struct control_loader *loader = calloc(1, sizeof(*loader));

  if (!loader || !(loader->brokers = strdup(brokers ? brokers : "")) ||
      (debug && !(loader->debug = strdup(debug))) ||
      kafka_topic_name(topic_prefix, KAFKA_TOPIC_CONTROL, loader->topics[0],
                       sizeof(loader->topics[0])) ||
      kafka_topic_name(topic_prefix, KAFKA_TOPIC_STATUS, loader->topics[1],
                       sizeof(loader->topics[1]))) {
    snprintf(err, err_size, "cannot start loading commands: out of memory or a bad topic prefix");
    goto fail;
  }
  loader->c = c;
  atomic_init(&loader->stop, 0);
  c->loader = loader;
  if (uv_thread_create(&loader->thread, control_loader_main, loader)) {
    c->loader = NULL;
    snprintf(err, err_size, "cannot start a thread to load commands");
    goto fail;
  }
  return 0;
fail:
  if (loader) {
    free(loader->brokers);
    free(loader->debug);
  }
  free(loader);
  return -1;
}

void control__loader_stop(control *c)
{
  struct control_loader *loader = c->loader;

  if (!loader)
    return;
  atomic_store(&loader->stop, 1);
  uv_thread_join(&loader->thread);
  c->loader = NULL;
  control__map_free(&loader->map);
  free(loader->brokers);
  free(loader->debug);
  free(loader);
}

control *control_create(uv_loop_t *loop, ingest *in, const char *brokers,
                        const char *topic_prefix, const char *kafka_debug,
                        const struct control_options *options, char *err, size_t err_size)
{
  control *c = calloc(1, sizeof(*c));

  if (!c || control__map_init(&c->map)) {
    free(c);
    snprintf(err, err_size, "out of memory");
    return NULL;
  }
  c->keep_finished_ms = options ? options->keep_finished_ms : 0;
  c->token_lifetime_ms = options ? options->token_lifetime_ms : 0;
  c->max_commands = options && options->max_commands ? options->max_commands
                                                     : CONTROL_MAX_COMMANDS;
  c->map.max_commands = c->max_commands;
  c->loop = loop;
  c->ingest = in;
  if (uv_async_init(loop, &c->loaded_async, control_loaded_cb)) {
    control__map_free(&c->map);
    free(c);
    snprintf(err, err_size, "cannot create an async handle");
    return NULL;
  }
  c->loaded_async.data = c;
  c->async_open = 1;
  if (control__loader_start(c, brokers, topic_prefix, kafka_debug, err, err_size)) {
    control_destroy(c);
    return NULL;
  }
  return c;
}

int control_ready(const control *c) { return c && c->ready; }

static void control_closed(uv_handle_t *handle)
{
  control *c = handle->data;
  control__map_free(&c->map);
  free(c);
}

void control_destroy(control *c)
{
  if (!c)
    return;
  control__loader_stop(c);
  if (c->async_open) {
    /* Freed once the loop has closed the handle. */
    uv_close((uv_handle_t *)&c->loaded_async, control_closed);
    return;
  }
  control__map_free(&c->map);
  free(c);
}
