/*
 * status_page.h - GET / : the store manager's status page. One HTML
 * response (under 64 KB, inline CSS and script, no external asset: the
 * store's internet may be down) that fetches /status.json every few
 * seconds and draws the verdict first, then the backlog, the device, today's
 * sales and stock. Its source is agent/status/status_page.html, embedded at
 * build time (scripts/embed.cmake).
 */
#ifndef AGENT_STATUS_PAGE_H
#define AGENT_STATUS_PAGE_H

#include "platform/http_server.h"

/*
 * Answers GET (and HEAD) / with the page: 200 text/html, never cached, with
 * a Content-Security-Policy that lets it talk to this device only. Loop
 * thread; the page is a constant in the binary, so this never touches the
 * journal.
 */
void status_page_handle(http_exchange *exchange);

#endif
