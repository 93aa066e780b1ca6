/*
 * pos_broker.c - a standalone Kafka broker for tests: librdkafka's mock
 * cluster on loopback ports with the project's topics created, so that
 * broker, collector and agent run as three processes.
 *
 *   pos-broker [--brokers N] [--partitions N] [--topic-prefix P]
 *
 * Prints one line "bootstrap=127.0.0.1:PORT[,...]" on stdout when it is
 * ready, then runs until SIGTERM or SIGINT. Everything is kept in memory
 * (the newest 5 MB or 100,000 message sets of each partition): a test
 * broker, never storage. kcat reads it like any Kafka.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka/kafka.h"
#include "platform/log.h"

static void usage(FILE *out)
{
  fprintf(out, "usage: pos-broker [--brokers N] [--partitions N] [--topic-prefix PREFIX]\n"
               "  --brokers N        mock brokers (1-16, default 1)\n"
               "  --partitions N     partitions per topic (1-1000, default 4)\n"
               "  --topic-prefix P   topic name prefix (default \"pos.\")\n"
               "Prints \"bootstrap=HOST:PORT,...\" on stdout, runs until SIGTERM/SIGINT.\n");
}

static int parse_int(const char *option, const char *text, int low, int high, int *value)
{
  char *end = NULL;
  long parsed;

  errno = 0;
  parsed = text ? strtol(text, &end, 10) : 0;
  if (!text || errno || !end || *end || end == text || parsed < low || parsed > high) {
    fprintf(stderr, "pos-broker: %s needs a number from %d to %d, not \"%s\"\n", option, low,
            high, text ? text : "");
    return -1;
  }
  *value = (int)parsed;
  return 0;
}

int main(int argc, char **argv)
{
  int brokers = 1, partitions = 4, signal_number = 0;
  const char *prefix = "pos.";
  kafka_embedded *embedded;
  sigset_t stop_signals;
  char err[512];

  for (int i = 1; i < argc; i++) {
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--brokers") == 0) {
      if (parse_int("--brokers", value, 1, 16, &brokers))
        return 2;
      i++;
    } else if (strcmp(argv[i], "--partitions") == 0) {
      if (parse_int("--partitions", value, 1, 1000, &partitions))
        return 2;
      i++;
    } else if (strcmp(argv[i], "--topic-prefix") == 0) {
      if (!value) {
        fprintf(stderr, "pos-broker: --topic-prefix needs a value\n");
        return 2;
      }
      prefix = value;
      i++;
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "pos-broker: unknown option \"%s\"\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }

  /* Block the stop signals before any librdkafka thread exists, so that
   * they all inherit the mask and sigwait below is the one to see them. */
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

  embedded = kafka_embedded_start(brokers, partitions, prefix, err, sizeof(err));
  if (!embedded) {
    fprintf(stderr, "pos-broker: %s\n", err);
    return 1;
  }
  printf("bootstrap=%s\n", kafka_embedded_bootstrap(embedded));
  fflush(stdout);
  log_info("broker", "ready", "bootstrap=%s brokers=%d partitions=%d topic_prefix=%s",
           kafka_embedded_bootstrap(embedded), brokers, partitions, prefix);

  while (sigwait(&stop_signals, &signal_number) != 0)
    ;
  log_info("broker", "stopping", "signal=%d", signal_number);
  kafka_embedded_stop(embedded);
  return 0;
}
