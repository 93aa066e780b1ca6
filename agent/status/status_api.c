/*
 * status_api.c - GET /status.json.
 */
#include "status/status_api.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "platform/clock.h"
#include "platform/disk.h"

void status_api_handle_json(journal *j, const struct status_api_options *options,
                            http_exchange *exchange)
{
  struct journal_stats stats;
  uint64_t disk_free = 0;
  char received[40];
  json_t *body;
  char *text = NULL;

  journal_get_stats(j, &stats);
  /* statvfs is one cheap syscall; asking every time keeps the figure live. */
  if (disk_free_bytes(options->journal_path, &disk_free))
    disk_free = 0;
  body = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:b}", "version", POS_VERSION,
                   "store_id", options->store_id, "device_id", options->device_id,
                   "journal_id", stats.journal_id, "sales_journaled",
                   (json_int_t)stats.sales_journaled, "sales_unsent",
                   (json_int_t)stats.sales_unsent, "last_seq", (json_int_t)stats.last_seq,
                   "disk_free_bytes", (json_int_t)disk_free, "journal_bytes",
                   (json_int_t)stats.database_bytes, "journal_writable", !stats.write_failing);
  if (body) {
    json_object_set_new(body, "last_sale_received",
                        stats.last_received_ms
                            ? json_string(clock_format_utc(stats.last_received_ms, received,
                                                           sizeof(received)))
                            : json_null());
    json_object_set_new(body, "journal_error",
                        stats.write_failing ? json_string(stats.last_error) : json_null());
    text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
  }
  if (text)
    http_exchange_respond(exchange, 200, "application/json", "Cache-Control: no-store\r\n", text,
                          strlen(text));
  else
    http_exchange_respond(exchange, 500, "application/json", NULL,
                          "{\"error\":\"out of memory\"}", strlen("{\"error\":\"out of memory\"}"));
  free(text);
  json_decref(body);
}
