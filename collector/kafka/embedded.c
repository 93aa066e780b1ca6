/*
 * embedded.c - the embedded Kafka: librdkafka's mock cluster with the
 * project's topics, so that the whole system runs on one machine with no
 * Kafka installed. Also what tests/tools/pos-broker runs.
 */
#include "kafka/kafka.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka_mock.h>

struct kafka_embedded {
  rd_kafka_t *owner; /* the mock cluster needs a client instance to live in */
  rd_kafka_mock_cluster_t *cluster;
  char *bootstrap;
};

kafka_embedded *kafka_embedded_start(int brokers, int partitions, const char *topic_prefix,
                                     char *err, size_t err_size)
{
  kafka_embedded *embedded = calloc(1, sizeof(*embedded));
  rd_kafka_conf_t *conf = NULL;
  char why[256];

  if (!embedded) {
    snprintf(err, err_size, "out of memory starting the embedded Kafka");
    return NULL;
  }
  if (brokers < 1 || brokers > 16 || partitions < 1 || partitions > 1000) {
    snprintf(err, err_size,
             "embedded Kafka: %d brokers and %d partitions per topic; allowed are 1-16 "
             "brokers and 1-1000 partitions",
             brokers, partitions);
    goto fail;
  }
  conf = rd_kafka_conf_new();
  /* The owner never connects anywhere: keep its "no bootstrap.servers"
   * notice out of the log. */
  if (kafka_conf_set(conf, "client.id", "pos-embedded-kafka", err, err_size) ||
      kafka_conf_set(conf, "log_level", "3", err, err_size))
    goto fail;
  embedded->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
  if (!embedded->owner) {
    snprintf(err, err_size, "embedded Kafka: %s", why);
    goto fail;
  }
  conf = NULL;
  embedded->cluster = rd_kafka_mock_cluster_new(embedded->owner, brokers);
  if (!embedded->cluster) {
    snprintf(err, err_size, "embedded Kafka: cannot start %d mock brokers (loopback ports?)",
             brokers);
    goto fail;
  }
  for (int t = 0; t < KAFKA_TOPIC_COUNT; t++) {
    char topic[256];
    rd_kafka_resp_err_t kerr;
    if (kafka_topic_name(topic_prefix, (enum kafka_topic)t, topic, sizeof(topic))) {
      snprintf(err, err_size, "topic prefix \"%s\" does not make a valid Kafka topic name",
               topic_prefix);
      goto fail;
    }
    kerr = rd_kafka_mock_topic_create(embedded->cluster, topic, partitions,
                                      brokers < 3 ? brokers : 3);
    if (kerr) {
      snprintf(err, err_size, "embedded Kafka: creating %s: %s", topic, rd_kafka_err2str(kerr));
      goto fail;
    }
  }
  embedded->bootstrap = strdup(rd_kafka_mock_cluster_bootstraps(embedded->cluster));
  if (!embedded->bootstrap) {
    snprintf(err, err_size, "out of memory starting the embedded Kafka");
    goto fail;
  }
  return embedded;
fail:
  if (conf)
    rd_kafka_conf_destroy(conf);
  kafka_embedded_stop(embedded);
  return NULL;
}

const char *kafka_embedded_bootstrap(const kafka_embedded *embedded)
{
  return embedded->bootstrap;
}

struct rd_kafka_mock_cluster_s *kafka_embedded_cluster(kafka_embedded *embedded)
{
  return embedded->cluster;
}

void kafka_embedded_stop(kafka_embedded *embedded)
{
  if (!embedded)
    return;
  if (embedded->cluster)
    rd_kafka_mock_cluster_destroy(embedded->cluster);
  if (embedded->owner)
    rd_kafka_destroy(embedded->owner);
  free(embedded->bootstrap);
  free(embedded);
}
