/*
 * status_page.c - GET / : the embedded status page.
 */
#include "status/status_page.h"

#include <stddef.h>

/* status_page_html.c, generated from status_page.html (scripts/embed.cmake). */
extern const char status_page_html[];
extern const size_t status_page_html_len;

/* The page talks to this device only: its own script and style are inline,
 * its data comes from /status.json and its one action from /actions/push. */
#define STATUS_PAGE_HEADERS                                                                   \
  "Cache-Control: no-store\r\n"                                                               \
  "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "                 \
  "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; "    \
  "form-action 'self'; frame-ancestors 'none'\r\n"                                           \
  "X-Content-Type-Options: nosniff\r\n"                                                       \
  "Referrer-Policy: no-referrer\r\n"

void status_page_handle(http_exchange *exchange)
{
  http_exchange_respond(exchange, 200, "text/html; charset=utf-8", STATUS_PAGE_HEADERS,
                        status_page_html, status_page_html_len);
}
