/*
 * config.h - the agent's configuration: one struct, one table of keys
 * (config.c). firmware-config/agent.conf.example is generated from the
 * same table (pos-agent --print-example-config) and checked by the tests.
 */
#ifndef AGENT_CONFIG_H
#define AGENT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "ingest/posdb/posdb.h"
#include "platform/config.h"

struct agent_config {
  /* [agent] */
  char *store_id;
  char *device_id;
  int log_level;
  /* [journal] */
  char *journal_path;
  int64_t retention_days;
  int64_t journal_max_size;   /* bytes; 0 = as large as the disk allows */
  int64_t group_commit_max;   /* sales per transaction; 1 = one fsync per sale */
  int64_t busy_timeout_ms;
  int new_journal_if_damaged; /* a damaged database is moved aside, not refused */
  int compact_rows;           /* sale rows in the compact form (schema 8) */
  char *row_format;           /* as written: "", "json", "compact" or "slim" */
  int slim_rows;              /* row_format = slim (schema 9); compact_rows is set too */
  /* [api] */
  char *listen_host;
  int64_t port;
  char *terminal_tokens_path;
  int64_t max_body_bytes;
  int64_t max_sales_per_request;
  int64_t idle_timeout_ms;
  int64_t request_timeout_ms;
  int64_t max_connections;
  int64_t max_connections_per_ip; /* 0 = no limit */
  char *manager_password_file; /* "" = actions (push now) disabled */
  char *api_tls_cert;          /* "" = plain HTTP */
  char *api_tls_key;
  /* [uplink] */
  char *metrics_listen_host;   /* "" = no operator listener */
  int64_t metrics_port;
  int64_t uplink_unhealthy_after_ms;

  char *uplink_url;            /* "" = uplink off */
  char *uplink_cert;
  char *uplink_key;
  char *uplink_ca;
  int64_t uplink_interval_ms;
  int64_t uplink_jitter_ms;
  int64_t uplink_heartbeat_interval_ms; /* 0 = no heartbeats */
  int64_t uplink_replay_rate;           /* replayed sales a second, 0 = no cap */
  int64_t uplink_max_batch_sales;
  int64_t uplink_max_batch_bytes;
  int64_t uplink_backoff_min_ms;
  int64_t uplink_backoff_max_ms;
  int64_t uplink_connect_timeout_ms;
  int64_t uplink_request_timeout_ms;
  int64_t uplink_zstd_level;
  /* [enrol] */
  char *enrol_url;           /* the collector's EST listener; "" = no first enrolment */
  char *enrol_token_file;    /* the one-time enrolment token; "" = none */
  char *enrol_renew_at_text; /* as written: "2/3", "0.66" or "66%" */
  double enrol_renew_at;     /* parsed from it by agent_config_load: a fraction in (0, 1) */
  int64_t enrol_retry_floor_ms;
  int64_t enrol_retry_max_ms;
  /* [inventory] */
  int refunds_restock;       /* refunds and voids put their goods back in stock */
  char *recipes_path;        /* recipe CSV loaded at start when the journal has none */
  char *low_stock;           /* "MATERIAL=QTY_MILLI,..." thresholds; "" = none */
  int64_t max_adjustments_per_request;
  /* [posdb], [posdb.sales], [posdb.lines], [posdb.payments] */
  char *posdb_path; /* "" = no tailer */
  int64_t posdb_poll_ms;
  int64_t posdb_busy_wait_ms;
  int64_t posdb_batch_sales;
  char *posdb_money;     /* "decimal" or "minor" */
  int posdb_money_minor; /* parsed from it by agent_config_load */
  char *posdb_sales_table;
  char *posdb_watermark;
  char *posdb_sale_key;
  char *posdb_lines_table;
  char *posdb_lines_sale_key;
  char *posdb_lines_order;
  char *posdb_payments_table;
  char *posdb_payments_sale_key;
  char *posdb_map[POSDB_FIELD_COUNT]; /* per field: column, 'constant' or "" */
  /* [spool] */
  char *spool_dir;            /* "" = the spool directory is off */
  int64_t spool_rescan_ms;
  int64_t spool_settle_ms;
  int64_t spool_max_line;     /* bytes */
};

extern const struct config_key agent_config_keys[];
extern const size_t agent_config_key_count;

/*
 * Reads a renewal point: "2/3", a decimal fraction "0.66" or a percentage
 * "66%", strictly between 0 and 1 (0% and 100% excluded). Returns 0 with
 * *fraction, or -1.
 */
int agent_config_parse_fraction(const char *text, double *fraction);

/*
 * Loads `path` into `config` (defaults first), then its drop-ins
 * "<path>.d/NAME.conf" in name order, a later file overriding keys set before
 * (config_load_dropins), and checks what the table alone cannot (keys that
 * depend on each other). Returns 0, or -1 with `err` saying file (the
 * drop-in or `path` that set the key at fault), line, key and what to do.
 * Free with agent_config_free.
 */
int agent_config_load(const char *path, struct agent_config *config, char *err,
                      size_t err_size);

void agent_config_free(struct agent_config *config);

/* The tailer's options from a loaded config (strings borrowed from it). */
void agent_config_posdb_options(const struct agent_config *config,
                                struct posdb_options *options);

#endif
