/*
 * config.h - the collector's configuration: one struct, one table (config.c).
 * collector/collector.conf.example is generated from the table
 * (pos-collector --print-example-config) and checked by the tests.
 */
#ifndef COLLECTOR_CONFIG_H
#define COLLECTOR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "platform/config.h"

struct collector_config {
  /* [collector] */
  char *instance_id;
  int log_level;
  /* [server] */
  char *listen_host;
  int64_t port;
  char *operator_listen_host; /* "" = no operator listener */
  int64_t operator_port;
  int64_t operator_unhealthy_after_ms;
  char *cert_file;
  char *key_file;
  char *ca_file;
  char *crl_file;
  int session_tickets;
  char *ticket_key_file;
  int64_t ticket_lifetime_ms;
  int64_t max_body_bytes;
  int64_t max_decoded_bytes;
  int64_t max_sales_per_batch;
  int64_t max_heartbeat_bytes;
  int64_t idle_timeout_ms;
  int64_t request_timeout_ms;
  int64_t max_connections;
  int64_t max_connections_per_ip;
  int64_t first_request_timeout_ms;
  int64_t handshake_threads; /* 0 = one per core: collector_pool_setup() */
  int64_t handshake_backlog_ms;
  /* [kafka] */
  char *brokers;
  char *topic_prefix;
  int64_t embedded_partitions;
  int64_t checkpoint_interval_ms;
  int64_t produce_timeout_ms;
  char *kafka_debug;
  /* [fleet] */
  char *fleet_group;
  int64_t fleet_session_timeout_ms;
  /* [control] */
  int64_t keep_finished_ms;
  /* [enrol] */
  char *enrol_ca_cert;  /* "" = no enrolment */
  char *enrol_ca_key;
  char *enrol_listen_host;
  int64_t enrol_port;
  int64_t enrol_cert_lifetime_ms;
  int64_t enrol_token_lifetime_ms;
};

extern const struct config_key collector_config_keys[];
extern const size_t collector_config_key_count;

/*
 * Loads `path` into `config` (defaults first) and checks what the table
 * alone cannot. Returns 0, or -1 with `err` naming file, line and key.
 * Free with collector_config_free.
 */
int collector_config_load(const char *path, struct collector_config *config, char *err,
                          size_t err_size);

void collector_config_free(struct collector_config *config);

#endif
