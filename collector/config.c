/*
 * config.c - the collector's configuration table.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#define KEY(sec, name, type, def, lo, hi, field, desc)                                   \
  {sec, name, type, def, lo, hi, offsetof(struct collector_config, field), desc}

#define MIB (1024LL * 1024LL)

const struct config_key collector_config_keys[] = {
    KEY("collector", "instance_id", CONFIG_STRING, "collector-1", 0, 0, instance_id,
        "this instance's name (no '/'), unique among the collectors of "
        "one Kafka cluster: it keys its checkpoints and its lease in pos.ingest-state.v1, and a "
        "collector started under an id another one runs under refuses to start"),
    KEY("collector", "log_level", CONFIG_LEVEL, "info", 0, 0, log_level,
        "debug, info, warn or error"),

    KEY("server", "listen_host", CONFIG_STRING, "0.0.0.0", 0, 0, listen_host,
        "address the mutual-TLS API listens on"),
    KEY("server", "port", CONFIG_INT, "8443", 0, 65535, port,
        "TCP port of the API (0 = any free port, logged)"),
    KEY("server", "cert", CONFIG_STRING, "/etc/pos-collector/server.crt", 0, 0, cert_file,
        "PEM certificate chain the collector presents (reloaded on SIGHUP)"),
    KEY("server", "key", CONFIG_STRING, "/etc/pos-collector/server.key", 0, 0, key_file,
        "PEM private key of that certificate (reloaded on SIGHUP, with it)"),
    KEY("server", "ca", CONFIG_STRING, "/etc/pos-collector/ca.crt", 0, 0, ca_file,
        "PEM CA that device and admin certificates must chain to (reloaded on SIGHUP)"),
    KEY("server", "crl", CONFIG_STRING, "", 0, 0, crl_file,
        "PEM CRL of revoked certificates, empty for none (reloaded on SIGHUP; one that is "
        "expired, not issued and signed by a CA of `ca`, or unreadable is refused and the "
        "one in use kept)"),
    KEY("server", "session_tickets", CONFIG_BOOL, "true", 0, 0, session_tickets,
        "issue TLS session tickets, so that a store reconnecting resumes its session: 0.4 ms "
        "of collector CPU instead of 8.5 (tests/bench/handshake_bench.sh); a ticket from "
        "under another CA file or CRL is not taken (a full handshake checks the store again)"),
    KEY("server", "ticket_key_file", CONFIG_STRING, "", 0, 0, ticket_key_file,
        "secret (at least 32 random bytes, mode 600) the ticket keys are derived from: give "
        "every instance behind a load balancer the same file ('head -c 32 /dev/urandom'); "
        "empty: a key drawn at start, good on this instance until it restarts"),
    KEY("server", "ticket_lifetime", CONFIG_DURATION, "12h", 60000, 7 * 86400000LL,
        ticket_lifetime_ms,
        "how long a ticket resumes a session; the keys rotate on this period, by the clock, "
        "on every instance alike"),
    KEY("server", "handshake_threads", CONFIG_INT, "0", 0, 256, handshake_threads,
        "threads doing TLS handshakes beside the event loop (a full one costs ~8.5 ms of CPU, "
        "so a crowd of stores reconnecting needs every core); 0 = one per core"),
    KEY("server", "handshake_backlog", CONFIG_DURATION, "2s", 1, 60000, handshake_backlog_ms,
        "a new connection is closed at once, before its handshake, while the handshakes "
        "waiting for a thread would take longer than this to get one: a crowd arriving faster "
        "than the cores shake hands comes back after its backoff instead of waiting until it "
        "gives up (counted in pos_collector_tls_refusals_total{reason=\"busy\"})"),
    KEY("server", "max_body", CONFIG_SIZE, "4M", 1024, 256 * MIB, max_body_bytes,
        "largest compressed batch accepted (413 above it; the agent splits)"),
    KEY("server", "max_decoded", CONFIG_SIZE, "32M", 1024, 1024 * MIB, max_decoded_bytes,
        "largest a batch may decompress to (a decompression bomb is refused with 400)"),
    KEY("server", "max_sales_per_batch", CONFIG_INT, "20000", 1, 1000000, max_sales_per_batch,
        "most sales in one batch (413 above it)"),
    KEY("server", "max_heartbeat", CONFIG_SIZE, "64K", 1024, 16 * MIB, max_heartbeat_bytes,
        "largest heartbeat body accepted"),
    KEY("server", "idle_timeout", CONFIG_DURATION, "120s", 1000, 3600000, idle_timeout_ms,
        "keep-alive connections idle this long are closed"),
    KEY("server", "request_timeout", CONFIG_DURATION, "60s", 1000, 3600000, request_timeout_ms,
        "a request must arrive whole within this time (408 otherwise)"),
    KEY("server", "max_connections", CONFIG_INT, "4096", 1, 1000000, max_connections,
        "most concurrent connections; at the limit the oldest one that has not yet sent a "
        "request is closed, else the new one is refused"),
    KEY("server", "max_connections_per_ip", CONFIG_INT, "64", 0, 1000000, max_connections_per_ip,
        "most concurrent connections from one address (0 = no limit)"),
    KEY("server", "first_request_timeout", CONFIG_DURATION, "10s", 100, 3600000,
        first_request_timeout_ms,
        "a new connection must finish its TLS handshake and send its first request's headers "
        "within this time (at most request_timeout)"),

    KEY("operator", "listen_host", CONFIG_STRING, "127.0.0.1", 0, 0, operator_listen_host,
        "address of the plain-HTTP operator listener (GET /metrics for Prometheus, GET "
        "/healthz); keep it on localhost or a management network; empty = off"),
    KEY("operator", "port", CONFIG_INT, "9465", 0, 65535, operator_port,
        "TCP port of the operator listener (0 = any free port, logged as "
        "event=operator_listening)"),
    KEY("operator", "unhealthy_after", CONFIG_DURATION, "60s", 1000, 86400000,
        operator_unhealthy_after_ms,
        "GET /healthz turns 503 when every batch for this long was answered 503 (Kafka not "
        "taking them); also while the exactly-once state is being rebuilt"),

    KEY("kafka", "brokers", CONFIG_STRING, "", 0, 0, brokers,
        "bootstrap servers; empty starts an embedded Kafka in memory (demos and tests only)"),
    KEY("kafka", "topic_prefix", CONFIG_STRING, "pos.", 0, 0, topic_prefix,
        "prefix of every topic name (pos. gives pos.sales.v1, ...)"),
    KEY("kafka", "embedded_partitions", CONFIG_INT, "4", 1, 1024, embedded_partitions,
        "partitions per topic of the embedded Kafka"),
    KEY("kafka", "checkpoint_interval", CONFIG_DURATION, "10s", 100, 3600000,
        checkpoint_interval_ms,
        "how often the exactly-once state is checkpointed to pos.ingest-state.v1"),
    KEY("kafka", "produce_timeout", CONFIG_DURATION, "20s", 100, 3600000, produce_timeout_ms,
        "a batch Kafka has not acknowledged by then is answered 503 (and stays in flight)"),
    KEY("kafka", "debug", CONFIG_STRING, "", 0, 0, kafka_debug,
        "librdkafka debug contexts (e.g. broker,topic,msg), empty for none"),

    KEY("fleet", "group", CONFIG_STRING, "pos-collectors", 0, 0, fleet_group,
        "the Kafka consumer group every collector instance of the chain joins: the group "
        "shares out the partitions of pos.sales.v1 (by pos.ownership.v1, which must have as "
        "many) between the instances; empty: this instance joins none (it runs alone). Not "
        "with the embedded Kafka"),
    KEY("fleet", "session_timeout", CONFIG_DURATION, "10s", 1000, 300000, fleet_session_timeout_ms,
        "an instance that does not heartbeat for this long loses its partitions to the "
        "others (within the broker's group.min/max.session.timeout.ms: 6s-30m by default)"),

    KEY("control", "keep_finished", CONFIG_DURATION, "30d", 3600000LL, 3650LL * 86400000LL,
        keep_finished_ms,
        "head-office commands finished this long ago are dropped from memory and deleted "
        "from pos.control.v1 (a tombstone); open commands are always kept"),

    KEY("enrol", "ca_cert", CONFIG_STRING, "", 0, 0, enrol_ca_cert,
        "PEM certificate of the issuing CA that signs device certificates over EST (RFC "
        "7030), its chain after it; it must chain to [server] ca; empty = no enrolment"),
    KEY("enrol", "ca_key", CONFIG_STRING, "", 0, 0, enrol_ca_key,
        "PEM private key of that CA (keep it readable by the collector's user only)"),
    KEY("enrol", "listen_host", CONFIG_STRING, "0.0.0.0", 0, 0, enrol_listen_host,
        "address of the EST listener: TLS where a client certificate is optional, serving "
        "only /.well-known/est/ (cacerts, simpleenroll with a token, simplereenroll with the "
        "current certificate); [server] port serves cacerts and simplereenroll too"),
    KEY("enrol", "port", CONFIG_INT, "8444", 0, 65535, enrol_port,
        "TCP port of the EST listener (0 = any free port, logged as event=enrol_listening)"),
    KEY("enrol", "cert_lifetime", CONFIG_DURATION, "365d", 60000LL, 3650LL * 86400000LL,
        enrol_cert_lifetime_ms,
        "validity of the device certificates issued (never past the issuing CA's own); "
        "devices renew at two thirds of it"),
    KEY("enrol", "token_lifetime", CONFIG_DURATION, "72h", 1000LL, 366LL * 86400000LL,
        enrol_token_lifetime_ms,
        "how long an enrolment token is valid when posctl enrol-token gives no --valid-for"),
};

const size_t collector_config_key_count =
    sizeof(collector_config_keys) / sizeof(collector_config_keys[0]);

int collector_config_load(const char *path, struct collector_config *config, char *err,
                          size_t err_size)
{
  memset(config, 0, sizeof(*config));
  if (config_load(path, collector_config_keys, collector_config_key_count, config, err,
                  err_size))
    return -1;
  if (!config->cert_file[0] || !config->key_file[0] || !config->ca_file[0]) {
    snprintf(err, err_size,
             "%s: [server] cert, key and ca are all required: the collector only speaks "
             "mutual TLS",
             path);
    return -1;
  }
  if (config->first_request_timeout_ms > config->request_timeout_ms) {
    snprintf(err, err_size,
             "%s: [server] first_request_timeout (%lld ms) is above request_timeout (%lld ms); "
             "it bounds the handshake and the first headers, so make it the shorter one",
             path, (long long)config->first_request_timeout_ms,
             (long long)config->request_timeout_ms);
    return -1;
  }
  if (!config->enrol_ca_cert[0] != !config->enrol_ca_key[0]) {
    snprintf(err, err_size, "%s: [enrol] ca_cert and ca_key go together: set both to enrol "
             "devices over EST, or neither", path);
    return -1;
  }
  if (!config->instance_id[0]) {
    snprintf(err, err_size, "%s: [collector] instance_id is empty", path);
    return -1;
  }
  /* It starts every key of the instance in pos.ingest-state.v1 ("<id>/<generation>/<part>",
   * "<id>/lease"): a '/' could make one instance's key another's. */
  if (strchr(config->instance_id, '/')) {
    snprintf(err, err_size,
             "%s: [collector] instance_id \"%.60s\" holds a '/', which would "
             "make its keys in pos.ingest-state.v1 look like another instance's: use letters, "
             "digits, '.', '_' or '-'",
             path, config->instance_id);
    return -1;
  }
  return 0;
}

void collector_config_free(struct collector_config *config)
{
  config_free(collector_config_keys, collector_config_key_count, config);
}
