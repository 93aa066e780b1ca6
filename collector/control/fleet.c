/*
 * fleet.c - the map of stores, and per store its devices with their latest
 * heartbeat (the fleet view) and its commands (commands.c).
 */
#include <stdlib.h>
#include <string.h>

#include "control/control_int.h"
#include "platform/clock.h"

/* Fixed: a chain stays short up to about a million stores. */
#define CONTROL_BUCKETS 65536u

/* FNV-1a of a NUL-terminated id. */
uint64_t control__hash(const char *text)
{
  uint64_t hash = 14695981039346656037ull;
  for (const char *p = text; *p; p++)
    hash = (hash ^ (uint8_t)*p) * 1099511628211ull;
  return hash;
}

int control__map_init(struct control_map *map)
{
  memset(map, 0, sizeof(*map));
  map->stores = calloc(CONTROL_BUCKETS, sizeof(*map->stores));
  map->commands = calloc(CONTROL_BUCKETS, sizeof(*map->commands));
  if (!map->stores || !map->commands) {
    free(map->stores);
    free(map->commands);
    memset(map, 0, sizeof(*map));
    return -1;
  }
  map->bucket_count = CONTROL_BUCKETS;
  return 0;
}

void control__map_free(struct control_map *map)
{
  if (!map->stores)
    return;
  for (size_t b = 0; b < map->bucket_count; b++) {
    struct control_store *store = map->stores[b];
    while (store) {
      struct control_store *next = store->next;
      for (size_t i = 0; i < store->device_count; i++) {
        if (store->devices[i].heartbeat)
          pos__v1__heartbeat__free_unpacked(store->devices[i].heartbeat, NULL);
      }
      for (size_t i = 0; i < store->command_count; i++)
        control__command_free(store->commands[i]);
      free(store->devices);
      free(store->commands);
      free(store);
      store = next;
    }
  }
  free(map->stores);
  free(map->commands);
  control__tokens_free(map);
  memset(map, 0, sizeof(*map));
}

struct control_store *control__store_find(const struct control_map *map, const char *store_id)
{
  struct control_store *store;

  if (!map->stores)
    return NULL;
  store = map->stores[control__hash(store_id) % map->bucket_count];
  while (store && strcmp(store->store_id, store_id) != 0)
    store = store->next;
  return store;
}

struct control_store *control__store_get(struct control_map *map, const char *store_id)
{
  struct control_store *store = control__store_find(map, store_id);
  size_t bucket;

  if (store)
    return store;
  if (!map->stores || !store_id[0] || strlen(store_id) > CONTROL_ID_MAX ||
      map->store_count >= CONTROL_MAX_STORES)
    return NULL;
  store = calloc(1, sizeof(*store));
  if (!store)
    return NULL;
  memcpy(store->store_id, store_id, strlen(store_id) + 1);
  bucket = control__hash(store_id) % map->bucket_count;
  store->next = map->stores[bucket];
  map->stores[bucket] = store;
  map->store_count++;
  return store;
}

struct control_device *control__device_find(const struct control_store *store,
                                            const char *device_id)
{
  /* A store has a handful of tills: a sorted array, searched in order. */
  for (size_t i = 0; i < store->device_count; i++) {
    int cmp = strcmp(store->devices[i].device_id, device_id);
    if (cmp == 0)
      return &store->devices[i];
    if (cmp > 0)
      break;
  }
  return NULL;
}

struct control_device *control__device_get(struct control_store *store, const char *device_id)
{
  struct control_device *devices;
  size_t at = 0;

  if (!device_id[0] || strlen(device_id) > CONTROL_ID_MAX)
    return NULL;
  while (at < store->device_count && strcmp(store->devices[at].device_id, device_id) < 0)
    at++;
  if (at < store->device_count && strcmp(store->devices[at].device_id, device_id) == 0)
    return &store->devices[at];
  devices = realloc(store->devices, (store->device_count + 1) * sizeof(*devices));
  if (!devices)
    return NULL;
  store->devices = devices;
  memmove(&devices[at + 1], &devices[at], (store->device_count - at) * sizeof(*devices));
  memset(&devices[at], 0, sizeof(*devices));
  memcpy(devices[at].device_id, device_id, strlen(device_id) + 1);
  store->device_count++;
  return &devices[at];
}

int control__fleet_take(struct control_map *map, const char *store_id, const char *device_id,
                        Pos__V1__Heartbeat *heartbeat)
{
  struct control_store *store = control__store_get(map, store_id);
  struct control_device *device = store ? control__device_get(store, device_id) : NULL;

  if (!device) {
    pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
    return -1;
  }
  /* The loader's copy may be older than one the loop took meanwhile. */
  if (device->heartbeat && device->heartbeat->received_ms > heartbeat->received_ms) {
    pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
    return 0;
  }
  if (device->heartbeat)
    pos__v1__heartbeat__free_unpacked(device->heartbeat, NULL);
  device->heartbeat = heartbeat;
  return 0;
}

void control_batch_seen(control *c, const char *store_id, const char *device_id)
{
  struct control_store *store = control__store_get(&c->map, store_id);
  struct control_device *device = store ? control__device_get(store, device_id) : NULL;

  if (device)
    device->last_batch_ms = clock_wall_ms();
}
