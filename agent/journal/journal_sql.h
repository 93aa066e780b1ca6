/*
 * journal_sql.h - every SQL statement of the journal, by name.
 *
 * Schema history (PRAGMA user_version): each entry of JOURNAL_MIGRATIONS
 * moves the database one version forward; never edit a published entry,
 * append a new one.
 */
#ifndef AGENT_JOURNAL_SQL_H
#define AGENT_JOURNAL_SQL_H

/* Version 1: meta, and sales with their lines and payments as JSON text
 * (money as integer minor units), one row per sale to keep flash writes
 * per sale small. */
#define JOURNAL_SCHEMA_V1                                                     \
  "CREATE TABLE meta("                                                        \
  "  key TEXT PRIMARY KEY,"                                                   \
  "  value TEXT NOT NULL) WITHOUT ROWID;"                                     \
  "CREATE TABLE sales("                                                       \
  "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"                                  \
  "  sale_id TEXT NOT NULL UNIQUE,"                                           \
  "  content_hash BLOB NOT NULL,"                                             \
  "  kind TEXT NOT NULL,"                                                     \
  "  original_sale_id TEXT,"                                                  \
  "  terminal_id TEXT NOT NULL,"                                              \
  "  cashier_id TEXT,"                                                        \
  "  channel TEXT NOT NULL,"                                                  \
  "  delivery_partner TEXT,"                                                  \
  "  business_time TEXT NOT NULL,"                                            \
  "  business_time_ms INTEGER NOT NULL,"                                      \
  "  utc_offset_min INTEGER NOT NULL,"                                        \
  "  currency TEXT NOT NULL,"                                                 \
  "  currency_exponent INTEGER NOT NULL,"                                     \
  "  total_minor INTEGER NOT NULL,"                                           \
  "  lines TEXT NOT NULL,"                                                    \
  "  payments TEXT NOT NULL,"                                                 \
  "  received_ms INTEGER NOT NULL,"                                           \
  "  batch_seq INTEGER);"                                                     \
  "CREATE INDEX sales_unsealed ON sales(batch_seq) WHERE batch_seq IS NULL;"

#define JOURNAL_SQL_INSERT_SALE                                               \
  "INSERT INTO sales(sale_id, content_hash, kind, original_sale_id,"          \
  " terminal_id, cashier_id, channel, delivery_partner, business_time,"       \
  " business_time_ms, utc_offset_min, currency, currency_exponent,"           \
  " total_minor, lines, payments, received_ms)"                               \
  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"      \
  " ?15, ?16, ?17)"

#define JOURNAL_SQL_FIND_SALE "SELECT seq, content_hash FROM sales WHERE sale_id = ?1"

#define JOURNAL_SQL_BEGIN "BEGIN IMMEDIATE"
#define JOURNAL_SQL_COMMIT "COMMIT"
#define JOURNAL_SQL_ROLLBACK "ROLLBACK"
#define JOURNAL_SQL_SAVEPOINT "SAVEPOINT write"
#define JOURNAL_SQL_RELEASE "RELEASE write"
#define JOURNAL_SQL_ROLLBACK_TO "ROLLBACK TO write"

#define JOURNAL_SQL_GET_META "SELECT value FROM meta WHERE key = ?1"
#define JOURNAL_SQL_PUT_META "INSERT INTO meta(key, value) VALUES(?1, ?2)"

#define JOURNAL_SQL_COUNTS                                                    \
  "SELECT count(*),"                                                          \
  " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'sales'), 0),"     \
  " coalesce(max(received_ms), 0),"                                           \
  " (SELECT count(*) FROM sales WHERE batch_seq IS NULL) FROM sales"

#define JOURNAL_SQL_PAGE_COUNT "PRAGMA page_count"

#endif
