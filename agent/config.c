/*
 * config.c - the agent's configuration table.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/posdb/posdb_int.h"
#include "inventory/stock.h"
#include "proto/codec.h"

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
    KEY("journal", "new_journal_if_damaged", CONFIG_BOOL, "false", 0, 0,
        new_journal_if_damaged,
        "true: a damaged database is renamed PATH.damaged-<time> (kept) and a new journal "
        "started; false: the agent refuses to start and says so"),
    KEY("journal", "compact_rows", CONFIG_BOOL, "false", 0, 0, compact_rows,
        "true: the old spelling of row_format = compact (agents of journal schema 7 or older "
        "then refuse the journal)"),
    KEY("journal", "row_format", CONFIG_STRING, "", 0, 0, row_format,
        "new sale rows: json, compact (fewer bytes to flash; schema 7 agents refuse the "
        "journal) or slim (fewer again; schema 8 agents refuse it); empty: as compact_rows"),

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
        "most concurrent connections; at the limit the oldest one that has not yet sent a "
        "request is closed, else the new one is refused"),
    KEY("api", "max_connections_per_ip", CONFIG_INT, "0", 0, 65536, max_connections_per_ip,
        "most concurrent connections from one LAN address (0 = no limit)"),
    KEY("api", "manager_password_file", CONFIG_STRING, "", 0, 0, manager_password_file,
        "file holding the line 'pos-agent --hash-password' prints for the manager's password "
        "(a password in clear still works), for Push now (HTTP Basic); empty = disabled"),
    KEY("api", "tls_cert", CONFIG_STRING, "", 0, 0, api_tls_cert,
        "PEM certificate chain the POS API presents: set it with tls_key to serve HTTPS only "
        "(terminal tokens and the manager's password then never cross the LAN in clear); "
        "empty = plain HTTP"),
    KEY("api", "tls_key", CONFIG_STRING, "", 0, 0, api_tls_key,
        "PEM private key of api.tls_cert"),

    KEY("metrics", "listen_host", CONFIG_STRING, "127.0.0.1", 0, 0, metrics_listen_host,
        "address of the operator listener (GET /metrics for Prometheus, GET /healthz), plain "
        "HTTP apart from the POS API; empty = off"),
    KEY("metrics", "port", CONFIG_INT, "9464", 0, 65535, metrics_port,
        "TCP port of the operator listener (0 = any free port, logged as "
        "event=metrics_listening)"),
    KEY("metrics", "uplink_unhealthy_after", CONFIG_DURATION, "1h", 1000, 30LL * 86400000,
        uplink_unhealthy_after_ms,
        "GET /healthz turns 503 when batches have failed for this long (also at once when the "
        "journal refuses sales or the uplink is stalled)"),

    KEY("uplink", "url", CONFIG_STRING, "", 0, 0, uplink_url,
        "collector base URL, e.g. https://collector.example:8443 (empty = uplink off: sales "
        "are journaled but not sent)"),
    KEY("uplink", "cert", CONFIG_STRING, "/etc/pos-agent/device.crt", 0, 0, uplink_cert,
        "this device's client certificate (PEM; SAN URI urn:pos:store:<store>:device:<device>)"),
    KEY("uplink", "key", CONFIG_STRING, "/etc/pos-agent/device.key", 0, 0, uplink_key,
        "private key of the device certificate (PEM)"),
    KEY("uplink", "ca", CONFIG_STRING, "/etc/pos-agent/ca.crt", 0, 0, uplink_ca,
        "CA certificates (PEM) the collector's server certificate must chain to (empty = the "
        "system's)"),
    KEY("uplink", "interval", CONFIG_DURATION, "15m", 1000, 86400000LL, uplink_interval_ms,
        "time between pushes of unsent sales"),
    KEY("uplink", "jitter", CONFIG_DURATION, "2m", 0, 3600000LL, uplink_jitter_ms,
        "random extra delay (0 to this) added to each interval, so stores do not push in step"),
    KEY("uplink", "heartbeat_interval", CONFIG_DURATION, "60s", 0, 3600000LL,
        uplink_heartbeat_interval_ms,
        "time between heartbeats to the collector (0 = no heartbeats)"),
    KEY("uplink", "replay_rate", CONFIG_INT, "0", 0, 1000000, uplink_replay_rate,
        "most sales a second a head-office resync replays (0 = as fast as the collector "
        "acknowledges them; one replay batch is in flight at a time, beside the live ones)"),
    KEY("uplink", "max_batch_sales", CONFIG_INT, "2000", 1, PROTO_DEFAULT_MAX_SALES,
        uplink_max_batch_sales, "most sales sealed into one batch"),
    KEY("uplink", "max_batch_bytes", CONFIG_SIZE, "1M", 16 * 1024, PROTO_DEFAULT_MAX_COMPRESSED,
        uplink_max_batch_bytes,
        "largest compressed batch body; a batch over it is sealed with fewer sales"),
    KEY("uplink", "backoff_min", CONFIG_DURATION, "2s", 100, 3600000LL, uplink_backoff_min_ms,
        "first retry delay after a failed push (doubles per failure, with full jitter)"),
    KEY("uplink", "backoff_max", CONFIG_DURATION, "5m", 1000, 86400000LL, uplink_backoff_max_ms,
        "longest retry delay; also how often a refused batch (400, 403) is retried"),
    KEY("uplink", "connect_timeout", CONFIG_DURATION, "15s", 1000, 300000, uplink_connect_timeout_ms,
        "time allowed to connect and finish the TLS handshake"),
    KEY("uplink", "request_timeout", CONFIG_DURATION, "2m", 1000, 3600000LL,
        uplink_request_timeout_ms,
        "time allowed for one whole request, answer included (the collector answers a batch "
        "once Kafka has it)"),
    KEY("uplink", "zstd_level", CONFIG_INT, "0", 0, 19, uplink_zstd_level,
        "zstd level of batches (higher: smaller, slower to seal); 0 = 19 up to 32 KiB before "
        "compression (a store's regular batch), 3 above (catching up: 19 needs megabytes)"),

    KEY("enrol", "url", CONFIG_STRING, "", 0, 0, enrol_url,
        "collector's EST listener, e.g. https://collector.example:8444, where a device with no "
        "certificate enrols with its token (empty = none; renewal goes to [uplink] url)"),
    KEY("enrol", "token_file", CONFIG_STRING, "", 0, 0, enrol_token_file,
        "file holding the one-time token from 'posctl enrol-token' (the installer writes it); "
        "used when uplink.cert/key are missing or expired, deleted once enrolled; empty = none"),
    KEY("enrol", "renew_at", CONFIG_STRING, "2/3", 0, 0, enrol_renew_at_text,
        "point of the certificate's lifetime at which it is renewed: a fraction (2/3, 0.66) "
        "or a percentage (66%); each device adds its own jitter"),
    KEY("enrol", "retry_floor", CONFIG_DURATION, "10m", 1000, 86400000LL, enrol_retry_floor_ms,
        "least time between two renewal or enrolment attempts; after a failure the wait "
        "doubles from it"),
    KEY("enrol", "retry_max", CONFIG_DURATION, "6h", 1000, 7LL * 86400000, enrol_retry_max_ms,
        "longest wait between attempts after failures"),

    KEY("inventory", "refunds_restock", CONFIG_BOOL, "false", 0, 0, refunds_restock,
        "true: refunds and voids put what their lines' recipes use back in stock (reason "
        "refunds); false: returned food is thrown away and stock does not move"),
    KEY("inventory", "recipes", CONFIG_STRING, "/usr/share/pos-agent/recipes.csv", 0, 0,
        recipes_path,
        "recipe CSV loaded at start when the journal holds no recipes yet (the chain's default "
        "set ships here with the firmware; later sets: POST /v1/recipes with the manager's "
        "password); empty: none"),
    KEY("inventory", "low_stock", CONFIG_STRING, "", 0, 0, low_stock,
        "low-stock thresholds shown on the status page: MATERIAL=QTY_MILLI,... in thousandths "
        "of the material's unit, e.g. MOZZARELLA=2000000,FLOUR-00=5000000"),
    KEY("inventory", "max_adjustments_per_request", CONFIG_INT, "1000", 1, 100000,
        max_adjustments_per_request, "most adjustments in one POST /v1/inventory/adjustments"),

    KEY("spool", "dir", CONFIG_STRING, "", 0, 0, spool_dir,
        "directory a till drops NAME.ndjson or NAME.csv files in (written as .NAME, "
        "NAME.tmp or NAME.part, then renamed); each goes to done/, or failed/ with "
        "NAME.reason; empty = off"),
    KEY("spool", "rescan", CONFIG_DURATION, "30s", 1000, 3600000, spool_rescan_ms,
        "the directory is read again this often (files are also noticed at once, as they "
        "appear)"),
    KEY("spool", "settle", CONFIG_DURATION, "5s", 0, 3600000, spool_settle_ms,
        "a file is taken once its size and time stamp have not changed for this long"),
    KEY("spool", "max_line", CONFIG_SIZE, "1M", 1024, 64 * MIB, spool_max_line,
        "longest line of a spool file; a longer one fails its file"),

    KEY("posdb", "path", CONFIG_STRING, "", 0, 0, posdb_path,
        "the POS vendor's SQLite database to take sales from, read-only (the agent's user "
        "needs read access to it and its -wal and -shm); empty: no tailer"),
    KEY("posdb", "poll", CONFIG_DURATION, "5s", 100, 3600000, posdb_poll_ms,
        "how often the database is looked at for new sales once caught up"),
    KEY("posdb", "busy_wait", CONFIG_DURATION, "10s", 0, 600000, posdb_busy_wait_ms,
        "how long one read waits for the POS holding its database, before trying again at "
        "the next poll"),
    KEY("posdb", "batch", CONFIG_INT, "200", 1, 5000, posdb_batch_sales,
        "most sales read in one read transaction (and journaled in one write)"),
    KEY("posdb", "money", CONFIG_STRING, "decimal", 0, 0, posdb_money,
        "decimal: money columns hold decimal text (\"12.50\"); minor: INTEGER columns in "
        "minor units of the sale's currency (1250 = 12.50 EUR). REAL columns are refused"),
    KEY("posdb.sales", "table", CONFIG_STRING, "", 0, 0, posdb_sales_table,
        "the vendor's table with one row per sale"),
    KEY("posdb.sales", "watermark", CONFIG_STRING, "", 0, 0, posdb_watermark,
        "an INTEGER column of it that grows with every new sale (its id): the tail's place"),
    KEY("posdb.sales", "key", CONFIG_STRING, "", 0, 0, posdb_sale_key,
        "the column the lines' (and payments') sale_key refers to; empty: the watermark"),
    KEY("posdb.sales", "sale_id", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_SALE_ID],
        "column holding the sale's id (required; each field below: a column, a constant in "
        "single quotes like 'EUR', or empty when the vendor does not keep it)"),
    KEY("posdb.sales", "kind", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_KIND],
        "sale, refund or void (required: a column, or 'sale')"),
    KEY("posdb.sales", "original_sale_id", CONFIG_STRING, "", 0, 0,
        posdb_map[POSDB_ORIGINAL_SALE_ID], "the sale a refund or void reverses"),
    KEY("posdb.sales", "terminal_id", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_TERMINAL_ID],
        "the till (required)"),
    KEY("posdb.sales", "cashier_id", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_CASHIER_ID],
        "who sold it"),
    KEY("posdb.sales", "channel", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_CHANNEL],
        "pos, online, delivery or pickup (empty: pos)"),
    KEY("posdb.sales", "delivery_partner", CONFIG_STRING, "", 0, 0,
        posdb_map[POSDB_DELIVERY_PARTNER], "for channel delivery"),
    KEY("posdb.sales", "business_time", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_BUSINESS_TIME],
        "RFC 3339 time with its UTC offset (required)"),
    KEY("posdb.sales", "currency", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_CURRENCY],
        "ISO 4217 code (required: a column, or the store's, like 'EUR')"),
    KEY("posdb.sales", "total", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_TOTAL],
        "the sale's total (required)"),
    KEY("posdb.lines", "table", CONFIG_STRING, "", 0, 0, posdb_lines_table,
        "the vendor's table with one row per line of a sale"),
    KEY("posdb.lines", "sale_key", CONFIG_STRING, "", 0, 0, posdb_lines_sale_key,
        "its column holding the sale's key ([posdb.sales] key)"),
    KEY("posdb.lines", "order", CONFIG_STRING, "", 0, 0, posdb_lines_order,
        "its column giving the lines' order within a sale; empty: as they were written"),
    KEY("posdb.lines", "sku", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_SKU], "required"),
    KEY("posdb.lines", "qty", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_QTY],
        "a whole number (required)"),
    KEY("posdb.lines", "unit_price", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_UNIT_PRICE],
        "required"),
    KEY("posdb.lines", "discount", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_DISCOUNT],
        "for the whole line"),
    KEY("posdb.lines", "promo_id", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_PROMO_ID], ""),
    KEY("posdb.lines", "tax", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_TAX],
        "for the whole line"),
    KEY("posdb.payments", "table", CONFIG_STRING, "", 0, 0, posdb_payments_table,
        "the vendor's table with one row per payment; empty: one payment per sale, from "
        "columns of the sales table"),
    KEY("posdb.payments", "sale_key", CONFIG_STRING, "", 0, 0, posdb_payments_sale_key,
        "its column holding the sale's key"),
    KEY("posdb.payments", "method", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_METHOD],
        "card, cash, ... (required)"),
    KEY("posdb.payments", "amount", CONFIG_STRING, "", 0, 0, posdb_map[POSDB_AMOUNT],
        "required"),
};

const size_t agent_config_key_count = sizeof(agent_config_keys) / sizeof(agent_config_keys[0]);

/*
 * The line of `path` that sets [section] name, so that an error found only
 * after loading (keys that depend on each other) still names its line.
 * Returns 0 when the key is not in the file (its default is in force).
 */
static int agent_config_line(const char *path, const char *section, const char *name)
{
  FILE *file = fopen(path, "r");
  char line[1024], current[64] = "";
  int line_no = 0, found = 0;

  if (!file)
    return 0;
  while (!found && fgets(line, sizeof(line), file)) {
    char *text = line, *end;
    size_t len;
    line_no++;
    while (*text == ' ' || *text == '\t')
      text++;
    if (*text == '[') {
      end = strchr(text, ']');
      if (end && (size_t)(end - text - 1) < sizeof(current)) {
        memcpy(current, text + 1, (size_t)(end - text - 1));
        current[end - text - 1] = '\0';
      }
      continue;
    }
    len = strlen(name);
    if (strcmp(current, section) == 0 && strncmp(text, name, len) == 0) {
      text += len;
      while (*text == ' ' || *text == '\t')
        text++;
      found = *text == '=' || *text == ':';
    }
  }
  fclose(file);
  return found ? line_no : 0;
}

/*
 * "file:line: " of the file that set [section] name last (the newest
 * drop-in that sets it, else `path`), else "path: ": an error found only
 * after loading names the file to fix.
 */
static void agent_config_where(const char *path, const char *section, const char *name,
                               char *out, size_t out_size)
{
  struct config_dropins dropins;
  char ignored[CONFIG_ERROR_MAX];
  int line = 0;

  snprintf(out, out_size, "%s: ", path);
  if (config_dropins_list(path, &dropins, ignored, sizeof(ignored)) == 0) {
    for (size_t i = dropins.count; i-- > 0 && !line;) {
      line = agent_config_line(dropins.paths[i], section, name);
      if (line)
        snprintf(out, out_size, "%s:%d: ", dropins.paths[i], line);
    }
  }
  config_dropins_free(&dropins);
  if (!line) {
    line = agent_config_line(path, section, name);
    if (line)
      snprintf(out, out_size, "%s:%d: ", path, line);
  }
}

/* See config.h. */
int agent_config_parse_fraction(const char *text, double *fraction)
{
  char *end;
  double value, denominator;

  while (*text == ' ' || *text == '\t')
    text++;
  value = strtod(text, &end);
  if (end == text)
    return -1;
  if (*end == '%') {
    value /= 100.0;
    end++;
  } else if (*end == '/') {
    const char *den_text = end + 1;
    denominator = strtod(den_text, &end);
    if (end == den_text || !(denominator > 0))
      return -1;
    value /= denominator;
  }
  while (*end == ' ' || *end == '\t')
    end++;
  if (*end != '\0' || !(value > 0.0 && value < 1.0))
    return -1;
  *fraction = value;
  return 0;
}

void agent_config_posdb_options(const struct agent_config *config,
                                struct posdb_options *options)
{
  memset(options, 0, sizeof(*options));
  options->path = config->posdb_path;
  options->poll_ms = config->posdb_poll_ms;
  options->busy_wait_ms = config->posdb_busy_wait_ms;
  options->batch_sales = (size_t)config->posdb_batch_sales;
  options->money_minor = config->posdb_money_minor;
  options->sales_table = config->posdb_sales_table;
  options->watermark = config->posdb_watermark;
  options->sale_key =
      config->posdb_sale_key[0] ? config->posdb_sale_key : config->posdb_watermark;
  options->lines_table = config->posdb_lines_table;
  options->lines_sale_key = config->posdb_lines_sale_key;
  options->lines_order = config->posdb_lines_order;
  options->payments_table = config->posdb_payments_table;
  options->payments_sale_key = config->posdb_payments_sale_key;
  for (int f = 0; f < POSDB_FIELD_COUNT; f++)
    options->map[f] = config->posdb_map[f];
}

/* [posdb] set: the mapping names what every sale needs, in plain names. */
static int agent_config_check_posdb(const char *path, struct agent_config *config, char *err,
                                    size_t err_size)
{
  static const struct {
    const char *section;
    enum posdb_field field;
  } required[] = {
      {"posdb.sales", POSDB_SALE_ID},       {"posdb.sales", POSDB_KIND},
      {"posdb.sales", POSDB_TERMINAL_ID},   {"posdb.sales", POSDB_BUSINESS_TIME},
      {"posdb.sales", POSDB_CURRENCY},      {"posdb.sales", POSDB_TOTAL},
      {"posdb.lines", POSDB_SKU},           {"posdb.lines", POSDB_QTY},
      {"posdb.lines", POSDB_UNIT_PRICE},    {"posdb.payments", POSDB_METHOD},
      {"posdb.payments", POSDB_AMOUNT},
  };
  struct posdb_options options;
  char where[300], why[CONFIG_ERROR_MAX];

  if (strcmp(config->posdb_money, "decimal") != 0 && strcmp(config->posdb_money, "minor") != 0) {
    agent_config_where(path, "posdb", "money", where, sizeof(where));
    snprintf(err, err_size,
             "%s[posdb] money = \"%s\": give decimal (money columns hold \"12.50\") or minor "
             "(INTEGER columns in minor units, 1250 for 12.50)",
             where, config->posdb_money);
    return -1;
  }
  config->posdb_money_minor = strcmp(config->posdb_money, "minor") == 0;
  for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
    if (config->posdb_map[required[i].field][0])
      continue;
    agent_config_where(path, required[i].section, posdb_field_name(required[i].field), where,
                       sizeof(where));
    snprintf(err, err_size,
             "%s[%s] %s is empty: every sale needs it; name the vendor's column, or give a "
             "constant in single quotes (like 'sale' or 'EUR')",
             where, required[i].section, posdb_field_name(required[i].field));
    return -1;
  }
  agent_config_posdb_options(config, &options);
  if (posdb_options_check(&options, why, sizeof(why))) {
    agent_config_where(path, "posdb", "path", where, sizeof(where));
    snprintf(err, err_size, "%s%.400s", where, why);
    return -1;
  }
  return 0;
}

int agent_config_load(const char *path, struct agent_config *config, char *err,
                      size_t err_size)
{
  char where[300];

  memset(config, 0, sizeof(*config));
  if (config_load(path, agent_config_keys, agent_config_key_count, config, err, err_size))
    return -1;
  /* What provisioning sets (store_id, device_id ...) lives in drop-ins, so
   * that the profile stays the package's unmodified conffile. */
  if (config_load_dropins(path, agent_config_keys, agent_config_key_count, config, err,
                          err_size))
    return -1;
  if (config->journal_path[0] == '\0') {
    agent_config_where(path, "journal", "path", where, sizeof(where));
    snprintf(err, err_size, "%s[journal] path is empty: set it to the journal database file",
             where);
    return -1;
  }
  if (config->uplink_url[0] && strncasecmp(config->uplink_url, "https://", 8) != 0 &&
      strncasecmp(config->uplink_url, "http://", 7) != 0) {
    agent_config_where(path, "uplink", "url", where, sizeof(where));
    snprintf(err, err_size,
             "%s[uplink] url = \"%s\": must start with https:// (the collector requires "
             "mutual TLS)",
             where, config->uplink_url);
    return -1;
  }
  if (strncasecmp(config->uplink_url, "https://", 8) == 0) {
    const char *missing = config->uplink_cert[0] == '\0'  ? "cert"
                          : config->uplink_key[0] == '\0' ? "key"
                                                          : NULL;
    if (missing) {
      agent_config_where(path, "uplink", missing, where, sizeof(where));
      snprintf(err, err_size,
               "%s[uplink] %s is empty: with an https url the device certificate and its key "
               "are needed (the collector refuses connections without one)",
               where, missing);
      return -1;
    }
  }
  if (config->uplink_url[0] && (config->store_id[0] == '\0' || config->device_id[0] == '\0')) {
    const char *missing = config->store_id[0] == '\0' ? "store_id" : "device_id";
    agent_config_where(path, "agent", missing, where, sizeof(where));
    snprintf(err, err_size,
             "%s[agent] %s is empty: the uplink is on ([uplink] url is set) and every batch "
             "names its store and device",
             where, missing);
    return -1;
  }
  if (config->uplink_backoff_min_ms > config->uplink_backoff_max_ms) {
    agent_config_where(path, "uplink", "backoff_min", where, sizeof(where));
    snprintf(err, err_size, "%s[uplink] backoff_min (%lld ms) is larger than backoff_max (%lld ms)",
             where, (long long)config->uplink_backoff_min_ms,
             (long long)config->uplink_backoff_max_ms);
    return -1;
  }
  if ((config->api_tls_cert[0] == '\0') != (config->api_tls_key[0] == '\0')) {
    const char *missing = config->api_tls_cert[0] == '\0' ? "tls_cert" : "tls_key";
    agent_config_where(path, "api", missing, where, sizeof(where));
    snprintf(err, err_size,
             "%s[api] %s is empty: HTTPS on the POS API needs both tls_cert and tls_key (or "
             "neither, for plain HTTP)",
             where, missing);
    return -1;
  }
  if (config->terminal_tokens_path[0] == '\0') {
    agent_config_where(path, "api", "terminal_tokens", where, sizeof(where));
    snprintf(err, err_size,
             "%s[api] terminal_tokens is empty: POS terminals need tokens to submit sales",
             where);
    return -1;
  }
  if (config->row_format[0]) {
    const char *f = config->row_format;
    int known = strcmp(f, "json") == 0 || strcmp(f, "compact") == 0 || strcmp(f, "slim") == 0;
    agent_config_where(path, "journal", "row_format", where, sizeof(where));
    if (!known) {
      snprintf(err, err_size,
               "%s[journal] row_format = \"%s\": give json, compact or slim (or leave it out: "
               "json, or compact with compact_rows = true)",
               where, f);
      return -1;
    }
    /* compact_rows = true is the old spelling of compact; slim rows are
     * compact too. Only json with it says two things at once. */
    if (config->compact_rows && strcmp(f, "json") == 0) {
      snprintf(err, err_size,
               "%s[journal] row_format = json, but compact_rows = true asks for compact rows: "
               "remove compact_rows (the old spelling of row_format = compact) or set "
               "row_format = compact",
               where);
      return -1;
    }
    config->slim_rows = strcmp(f, "slim") == 0;
    config->compact_rows = strcmp(f, "json") != 0;
  }
  if (agent_config_parse_fraction(config->enrol_renew_at_text, &config->enrol_renew_at) != 0) {
    agent_config_where(path, "enrol", "renew_at", where, sizeof(where));
    snprintf(err, err_size,
             "%s[enrol] renew_at = \"%s\": give a point of the lifetime between 0 and 1, as a "
             "fraction (2/3, 0.66) or a percentage (66%%)",
             where, config->enrol_renew_at_text);
    return -1;
  }
  if (config->enrol_url[0] && strncasecmp(config->enrol_url, "https://", 8) != 0 &&
      strncasecmp(config->enrol_url, "http://", 7) != 0) {
    agent_config_where(path, "enrol", "url", where, sizeof(where));
    snprintf(err, err_size,
             "%s[enrol] url = \"%s\": must start with https:// (the collector's EST listener, "
             "e.g. https://collector.example:8444)",
             where, config->enrol_url);
    return -1;
  }
  if (config->enrol_token_file[0] && !config->enrol_url[0]) {
    agent_config_where(path, "enrol", "token_file", where, sizeof(where));
    snprintf(err, err_size,
             "%s[enrol] token_file is set but [enrol] url is empty: the token is spent at the "
             "collector's EST listener; set url (e.g. https://collector.example:8444) or "
             "remove token_file",
             where);
    return -1;
  }
  if (config->enrol_url[0] && !config->uplink_url[0]) {
    agent_config_where(path, "enrol", "url", where, sizeof(where));
    snprintf(err, err_size,
             "%s[enrol] url is set but [uplink] url is empty: an enrolled certificate is for "
             "sending sales; set [uplink] url too, or empty [enrol] url",
             where);
    return -1;
  }
  if (config->enrol_url[0] &&
      (config->uplink_cert[0] == '\0' || config->uplink_key[0] == '\0')) {
    const char *missing = config->uplink_cert[0] == '\0' ? "cert" : "key";
    agent_config_where(path, "uplink", missing, where, sizeof(where));
    snprintf(err, err_size,
             "%s[uplink] %s is empty: enrolment ([enrol] url) writes the device certificate "
             "and key there",
             where, missing);
    return -1;
  }
  if (config->enrol_retry_floor_ms > config->enrol_retry_max_ms) {
    agent_config_where(path, "enrol", "retry_floor", where, sizeof(where));
    snprintf(err, err_size,
             "%s[enrol] retry_floor (%lld ms) is larger than retry_max (%lld ms)", where,
             (long long)config->enrol_retry_floor_ms, (long long)config->enrol_retry_max_ms);
    return -1;
  }
  if (config->posdb_path[0] && agent_config_check_posdb(path, config, err, err_size))
    return -1;
  if (config->low_stock[0]) {
    /* Checked here too, so that --check-config finds a bad threshold. */
    struct stock scratch;
    char why[CONFIG_ERROR_MAX];
    int bad = stock_init(&scratch) || stock_set_thresholds(&scratch, config->low_stock, why,
                                                             sizeof(why));
    stock_destroy(&scratch);
    if (bad) {
      agent_config_where(path, "inventory", "low_stock", where, sizeof(where));
      snprintf(err, err_size, "%s%.400s", where, why);
      return -1;
    }
  }
  return 0;
}

void agent_config_free(struct agent_config *config)
{
  config_free(agent_config_keys, agent_config_key_count, config);
}
