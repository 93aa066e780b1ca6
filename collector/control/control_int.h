/*
 * control_int.h - shared between the files of collector/control/ only:
 * fleet.c (the map of stores and devices), commands.c (a command's life
 * cycle and its records) and load.c (the thread that rebuilds both from
 * Kafka at start).
 */
#ifndef COLLECTOR_CONTROL_INT_H
#define COLLECTOR_CONTROL_INT_H

#include <stdatomic.h>

#include "control/control.h"

/* Stores by id and commands by id: what the loop serves from, and what the
 * loader builds before the loop adopts it. */
struct control_map {
  struct control_store **stores;     /* hash buckets */
  struct control_command **commands; /* hash buckets, by command_id */
  size_t bucket_count;
  size_t store_count, command_count;
  size_t max_commands; /* 0: CONTROL_MAX_COMMANDS */
  struct control_token *tokens; /* enrolment tokens, newest first */
  size_t token_count;
};

struct control_loader {
  control *c;
  char *brokers, *debug;
  char topics[2][256]; /* control.v1, agent-status.v1 */
  atomic_int stop;
  uv_thread_t thread;
  int rc;
  struct control_map map; /* the result, the loader's until the loop joins it */
  uint64_t commands_read, heartbeats_read, commands_skipped;
};

struct control {
  uv_loop_t *loop;
  ingest *ingest;
  int ready;
  struct control_map map;
  struct control_loader *loader; /* NULL once joined */
  uv_async_t loaded_async;
  int async_open;
  unsigned serial; /* makes ids issued in the same second differ */
  int64_t keep_finished_ms; /* 0: keep every command */
  size_t max_commands;
  int64_t last_prune_ms;
  int64_t token_lifetime_ms; /* 0: no enrolment */
};

/* fleet.c */
uint64_t control__hash(const char *text);
int control__map_init(struct control_map *map);
void control__map_free(struct control_map *map);
struct control_store *control__store_find(const struct control_map *map, const char *store_id);
/* Finds or adds; NULL when out of memory or over CONTROL_MAX_STORES. */
struct control_store *control__store_get(struct control_map *map, const char *store_id);
struct control_device *control__device_find(const struct control_store *store,
                                            const char *device_id);
struct control_device *control__device_get(struct control_store *store, const char *device_id);
/* Keeps `heartbeat` (taken) as the device's latest unless it holds a newer one. 0 or -1. */
int control__fleet_take(struct control_map *map, const char *store_id, const char *device_id,
                        Pos__V1__Heartbeat *heartbeat);

/* commands.c */
struct control_command *control__command_find(const struct control_map *map,
                                              const char *command_id);
/* Adds `command` (taken) to its store, replacing one of the same id. 0 or -1 (memory). */
int control__command_put(struct control_map *map, struct control_command *command);
void control__command_remove(struct control_map *map, const char *command_id);
void control__command_free(struct control_command *command);
/* From a control.v1 value: NULL when it is not a resync or push-now, or out of memory. */
struct control_command *control__command_from_proto(const Pos__V1__Command *proto);

/* Applies the command reports of `heartbeat` (borrowed) to its store's commands. Loop. */
void control__take_reports(control *c, const Pos__V1__Heartbeat *heartbeat);
/* Drops finished commands older than keep_finished_ms from memory and tombstones them in
 * pos.control.v1; unless `force`, at most once a minute. Loop. */
void control__prune(control *c, int force);
/* Produces every state of the store's commands that Kafka does not hold yet. Loop. */
void control__commit_store(control *c, const struct control_store *store);

/* tokens.c */
/* From a control.v1 value of key "<store>/enrol-token/<id>" (`token_id`):
 * kept in `map`, replacing one of the same id; NULL `proto` deletes. 0 or -1. */
int control__token_put(struct control_map *map, const char *token_id,
                       const Pos__V1__EnrolToken *proto);
void control__tokens_free(struct control_map *map);
/* From a control.v1 value of key "<store>/decommissioned": NULL `proto` puts it back. 0 or -1. */
int control__decommission_put(struct control_map *map, const char *store_id,
                              const Pos__V1__StoreDecommission *proto);

/* load.c (loop thread) */
int control__loader_start(control *c, const char *brokers, const char *topic_prefix,
                          const char *debug, char *err, size_t err_size);
void control__loader_stop(control *c);

#endif
