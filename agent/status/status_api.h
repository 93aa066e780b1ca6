/*
 * status_api.h - what the store manager and monitoring read:
 * GET /status.json (no authentication; it holds no secrets).
 */
#ifndef AGENT_STATUS_API_H
#define AGENT_STATUS_API_H

#include "journal/journal.h"
#include "platform/http_server.h"

struct status_api_options {
  const char *store_id;
  const char *device_id;
  const char *journal_path; /* for the free disk space */
};

/* Answers GET /status.json from the journal's counters. `j` is borrowed. */
void status_api_handle_json(journal *j, const struct status_api_options *options,
                            http_exchange *exchange);

#endif
