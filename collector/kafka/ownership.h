/*
 * ownership.h - which partitions of pos.sales.v1 this collector instance
 * writes, from Kafka's group protocol (ARCHITECTURE.md, Delivery guarantees
 * 5; issue 15, item 1).
 *
 * Every instance joins one consumer group on the ownership topic
 * (pos.ownership.v1), whose partitions mirror pos.sales.v1's: partition P of
 * it assigned to an instance means that instance is the one writer of data
 * partition P, i.e. of every store whose key the producer's partitioner
 * (murmur2_random) puts there (ownership_store_partition). The group
 * coordinator assigns them (roundrobin, eager: see ownership.c for why not
 * cooperative-sticky) and reassigns them when an instance comes or goes, or
 * stops heartbeating for session_timeout: nothing to configure
 * by hand. No record is ever read from or written to the topic; it exists
 * for its partition count.
 *
 * The collector hands each change to its ingest (ingest.h, ingest_fleet_*),
 * which takes only the stores of the partitions owned and lets a revoked
 * partition go once everything it produced is acknowledged.
 *
 * All calls and the callback run on the loop thread given to
 * ownership_create.
 */
#ifndef COLLECTOR_KAFKA_OWNERSHIP_H
#define COLLECTOR_KAFKA_OWNERSHIP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Partitions of the ownership topic this code keeps track of (a topic may have fewer). */
#define OWNERSHIP_MAX_PARTITIONS 1024

struct ownership_options {
  const char *brokers;
  const char *group;       /* the consumer group every instance joins */
  const char *topic;       /* the ownership topic, e.g. "pos.ownership.v1" */
  const char *sales_topic; /* whose partition count the ownership topic must have */
  const char *instance_id; /* the member's client.id, in the group's description */
  uint64_t session_timeout_ms;
  const char *kafka_debug; /* librdkafka "debug" property, or NULL */
  /* Called after each change of the assignment (may be NULL). */
  void (*on_change)(void *arg);
  /* Called when the group takes partitions back (a rebalance; `lost`: the
   * group had already given them away, this member having been out of it).
   * From then on ownership_owns says no; the member keeps them in the
   * group's eyes (the rebalance waits) until ownership_released is called,
   * possibly from within this callback. NULL: given up at once. */
  void (*on_revoke)(void *arg, int lost);
  void *arg;
};

typedef struct ownership ownership;

/*
 * Checks that the ownership topic exists with as many partitions as the
 * sales topic (a metadata request, at most 5 s), then joins the group.
 * Returns NULL with `err` saying what is wrong and what to do.
 */
ownership *ownership_create(uv_loop_t *loop, const struct ownership_options *options, char *err,
                            size_t err_size);

/* Partitions of the ownership topic (and of pos.sales.v1). */
int ownership_partition_count(const ownership *o);

/* 1 once the member left the group for good (the ownership topic is missing or of
 * another partition count: logged as fleet_off), or for NULL. */
int ownership_off(const ownership *o);
/* Why it is off (for people). Borrowed. */
const char *ownership_off_reason(const ownership *o);

/* 1 when the last assignment came to a new member id: this member had been put out of the
 * group (its partitions given to others meanwhile) and joined again. */
int ownership_rejoined(const ownership *o);

/* 1 when this instance is assigned partition `partition` now. */
int ownership_owns(const ownership *o, int32_t partition);

/* How many partitions this instance is assigned now. */
int ownership_owned_count(const ownership *o);

/*
 * The data partition of a store, as the collector's producer
 * (murmur2_random on the store_id key) puts its records: librdkafka's own
 * partitioner, so the two cannot disagree. Pure.
 */
int32_t ownership_store_partition(const char *store_id, int partitions);

/* The partitions revoked (on_revoke) may go to other members now. */
void ownership_released(ownership *o);

/* Leaves the group (its partitions go to the others at once) and frees; with `leave` 0, frees
 * without leaving: the partitions move once the session times out (records of this instance
 * may still land). NULL is ignored. */
void ownership_destroy(ownership *o, int leave);

#endif
