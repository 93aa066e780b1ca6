/*
 * config.c - the agent's configuration table.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#define KEY(sec, name, type, def, lo, hi, field, desc)                                   \
  {sec, name, type, def, lo, hi, offsetof(struct agent_config, field), desc}

#define MIB (1024LL * 1024LL)

const struct config_key agent_config_keys[] = {
    KEY("agent", "store_id", CONFIG_STRING, "", 0, 0, store_id,
        "store this device belongs to (also in the device certificate's SAN URI)"),
    KEY("agent", "device_id", CONFIG_STRING, "", 0, 0, device_id,
        "this device's id within the store"),
    KEY("agent", "log_level", CONFIG_LEVEL, "info", 0, 0, log_level,
        "debug, info, warn or error"),

    KEY("journal", "path", CONFIG_STRING, "/var/lib/pos-agent/journal.db", 0, 0, journal_path,
        "SQLite journal of every sale; its directory is created if missing"),
    KEY("journal", "retention_days", CONFIG_INT, "90", 1, 3650, retention_days,
        "days an acknowledged sale is kept for resync"),
    KEY("journal", "max_size", CONFIG_SIZE, "0", 0, 1024 * 1024 * MIB, journal_max_size,
        "largest the journal may grow (0 = until the disk is full); past it sales get 503"),
    KEY("journal", "group_commit_max", CONFIG_INT, "1024", 1, 65536, group_commit_max,
        "most sales made durable by one transaction (1 = one fsync per sale)"),
    KEY("journal", "busy_timeout", CONFIG_DURATION, "5s", 0, 600000, busy_timeout_ms,
        "how long a write waits for another process holding the database"),

    KEY("api", "listen_host", CONFIG_STRING, "127.0.0.1", 0, 0, listen_host,
        "address the POS API and status page listen on (0.0.0.0 for the store LAN)"),
    KEY("api", "port", CONFIG_INT, "8080", 0, 65535, port,
        "TCP port of the POS API and status page (0 = any free port, logged)"),
    KEY("api", "terminal_tokens", CONFIG_STRING, "/etc/pos-agent/terminals", 0, 0,
        terminal_tokens_path,
        "file of '<terminal_id> <token>' lines; '*' as terminal id accepts any terminal"),
    KEY("api", "max_body", CONFIG_SIZE, "4M", 1024, 256 * MIB, max_body_bytes,
        "largest request body accepted (413 above it)"),
    KEY("api", "max_sales_per_request", CONFIG_INT, "1000", 1, 100000, max_sales_per_request,
        "most sales in one POST /v1/sales array"),
    KEY("api", "idle_timeout", CONFIG_DURATION, "60s", 1000, 3600000, idle_timeout_ms,
        "keep-alive connections idle this long are closed"),
    KEY("api", "request_timeout", CONFIG_DURATION, "30s", 1000, 3600000, request_timeout_ms,
        "a request must arrive whole within this time (408 otherwise)"),
    KEY("api", "max_connections", CONFIG_INT, "256", 1, 65536, max_connections,
        "most concurrent connections; more are refused"),
};

const size_t agent_config_key_count = sizeof(agent_config_keys) / sizeof(agent_config_keys[0]);

int agent_config_load(const char *path, struct agent_config *config, char *err,
                      size_t err_size)
{
  memset(config, 0, sizeof(*config));
  if (config_load(path, agent_config_keys, agent_config_key_count, config, err, err_size))
    return -1;
  if (config->journal_path[0] == '\0') {
    snprintf(err, err_size, "%s: [journal] path is empty: set it to the journal database file",
             path);
    return -1;
  }
  if (config->terminal_tokens_path[0] == '\0') {
    snprintf(err, err_size,
             "%s: [api] terminal_tokens is empty: POS terminals need tokens to submit sales",
             path);
    return -1;
  }
  return 0;
}

void agent_config_free(struct agent_config *config)
{
  config_free(agent_config_keys, agent_config_key_count, config);
}
