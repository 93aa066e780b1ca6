/*
 * journal_sql.h - every SQL statement of the journal, by name.
 *
 * Schema history: each JOURNAL_SCHEMA_Vn moves the database one version
 * forward; never edit a published entry, append a new one. A step is
 * additive (CREATE TABLE or INDEX, ADD COLUMN with a default: an agent of
 * the schema before it still reads and writes the journal) or not, and
 * journal.c marks which: PRAGMA user_version is the oldest schema that can
 * read this journal (raised by non-additive steps only), meta
 * schema_version the newest step applied (see journal_migrate).
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

/* Version 2: sealed batches. body is the exact zstd+protobuf sent to the
 * collector (a retry resends it byte for byte); acked_ms is when the
 * collector first acknowledged it (NULL until then), which retention counts
 * from. The meta keys are the uplink's durable cursor: batch numbers are
 * never reused even after retention deleted every batch row. */
#define JOURNAL_SCHEMA_V2                                                     \
  "CREATE TABLE batches("                                                     \
  "  batch_seq INTEGER PRIMARY KEY,"                                          \
  "  kind TEXT NOT NULL,"                                                     \
  "  resync_id TEXT,"                                                         \
  "  first_seq INTEGER NOT NULL,"                                             \
  "  last_seq INTEGER NOT NULL,"                                              \
  "  sale_count INTEGER NOT NULL,"                                            \
  "  body BLOB NOT NULL,"                                                     \
  "  created_ms INTEGER NOT NULL,"                                            \
  "  attempts INTEGER NOT NULL DEFAULT 0,"                                    \
  "  last_attempt_ms INTEGER,"                                                \
  "  acked_ms INTEGER);"                                                      \
  "INSERT OR IGNORE INTO meta(key, value) VALUES('acked_batch_seq', '0'),"    \
  " ('acked_last_seq', '0'), ('last_batch_seq', '0');"

/* Version 3: a sale's batch is the batch whose seq range holds it, so a
 * sale row is written once, when it is journaled, and never again when it
 * is sealed: no sales.batch_seq column and no index on it (each cost a page
 * write per sale on flash). meta sealed_last_seq is the sealing cursor:
 * sales above it are not in any batch yet. */
#define JOURNAL_SCHEMA_V3                                                     \
  "DROP INDEX sales_unsealed;"                                                \
  "ALTER TABLE sales DROP COLUMN batch_seq;"                                  \
  "INSERT OR REPLACE INTO meta(key, value) VALUES('sealed_last_seq',"         \
  " max(coalesce((SELECT max(last_seq) FROM batches), 0),"                    \
  "     coalesce((SELECT CAST(value AS INTEGER) FROM meta"                    \
  "               WHERE key = 'acked_last_seq'), 0)));"

/* Version 4: where a sale carried over into this journal was before (a
 * journal that lost its tail, or a clone's), oldest first (position 0):
 * that journal may have sent it, so the batch says so (Sale.carried_from)
 * and the collector skips what its log holds under those journals. Empty
 * on almost every device: nothing is written per sale. */
#define JOURNAL_SCHEMA_V4                                                     \
  "CREATE TABLE carried("                                                     \
  "  seq INTEGER NOT NULL,"                                                   \
  "  position INTEGER NOT NULL,"                                              \
  "  journal_id TEXT NOT NULL,"                                               \
  "  previous_seq INTEGER NOT NULL,"                                          \
  "  PRIMARY KEY(seq, position)) WITHOUT ROWID;"

/* Version 5: inventory. A row's deltas (stock_deltas_encode: a few dozen
 * bytes, materials by their number in stock_names) live in the row itself,
 * written once with it: no per-material row, which would cost a page write
 * per material per sale on flash. stock_names gains a row the first time a
 * (material, unit) is used, in the transaction of the row that uses it.
 * Adjustments (deliveries, waste, counts) take their seq from the sales'
 * counter (sqlite_sequence 'sales'), so batches cover one contiguous range
 * of rows of both kinds. stock_base is on-hand as of the sealing cursor,
 * written by the seal transaction: on-hand = base + deltas of the rows
 * above the cursor, exact after kill -9 without a write per sale. */
#define JOURNAL_SCHEMA_V5                                                     \
  "ALTER TABLE sales ADD COLUMN deltas BLOB;"                                 \
  "CREATE TABLE adjustments("                                                 \
  "  seq INTEGER PRIMARY KEY,"                                                \
  "  adjustment_id TEXT NOT NULL UNIQUE,"                                     \
  "  content_hash BLOB NOT NULL,"                                             \
  "  kind TEXT NOT NULL,"                                                     \
  "  material_id TEXT NOT NULL,"                                              \
  "  unit TEXT NOT NULL,"                                                     \
  "  quantity_milli INTEGER NOT NULL,"                                        \
  "  business_time TEXT NOT NULL,"                                            \
  "  business_time_ms INTEGER NOT NULL,"                                      \
  "  utc_offset_min INTEGER NOT NULL,"                                        \
  "  reason TEXT,"                                                            \
  "  note TEXT,"                                                              \
  "  received_ms INTEGER NOT NULL,"                                           \
  "  deltas BLOB);"                                                           \
  "CREATE TABLE stock_names("                                                 \
  "  name_id INTEGER PRIMARY KEY,"                                            \
  "  name TEXT NOT NULL,"                                                     \
  "  unit TEXT NOT NULL);"                                                    \
  "CREATE TABLE stock_base("                                                  \
  "  material_id TEXT PRIMARY KEY,"                                           \
  "  unit TEXT NOT NULL,"                                                     \
  "  on_hand_milli INTEGER NOT NULL) WITHOUT ROWID;"

/* Version 6: head-office commands (issue 10). A command is recorded here,
 * on flash, before it is acted on, so that a reboot neither loses nor
 * repeats it: a command_id already in the table is never run again. A
 * resync's replay cursor lives in its row (replay_*), and each replay batch
 * it cut keeps its seq range in replay_batches before it is sent, so that a
 * batch_seq always means the same rows; the body is made again from those
 * rows (immutable) rather than stored. meta sales_deleted says why sales
 * were ever deleted ("retention" or "full"): a resync from before the
 * oldest sale held must say that history is gone. */
#define JOURNAL_SCHEMA_V6                                                     \
  "CREATE TABLE commands("                                                    \
  "  command_id TEXT PRIMARY KEY,"                                            \
  "  kind INTEGER NOT NULL,"                                                  \
  "  state INTEGER NOT NULL,"                                                 \
  "  issued_ms INTEGER NOT NULL,"                                             \
  "  issued_by TEXT NOT NULL,"                                                \
  "  recorded_ms INTEGER NOT NULL,"                                           \
  "  updated_ms INTEGER NOT NULL,"                                            \
  "  from_ms INTEGER NOT NULL,"                                               \
  "  to_ms INTEGER NOT NULL,"                                                 \
  "  upto_seq INTEGER NOT NULL,"                                              \
  "  done_sales INTEGER NOT NULL,"                                            \
  "  total_sales INTEGER NOT NULL,"                                           \
  "  available_from_ms INTEGER NOT NULL,"                                     \
  "  incomplete TEXT NOT NULL,"                                               \
  "  message TEXT NOT NULL,"                                                  \
  "  replay_batch_seq INTEGER NOT NULL,"                                      \
  "  replay_acked_batch_seq INTEGER NOT NULL,"                                \
  "  replay_cut_seq INTEGER NOT NULL,"                                        \
  "  replay_acked_seq INTEGER NOT NULL) WITHOUT ROWID;"                       \
  "CREATE TABLE replay_batches("                                              \
  "  resync_id TEXT NOT NULL,"                                                \
  "  batch_seq INTEGER NOT NULL,"                                             \
  "  first_seq INTEGER NOT NULL,"                                             \
  "  last_seq INTEGER NOT NULL,"                                              \
  "  sale_count INTEGER NOT NULL,"                                            \
  "  created_ms INTEGER NOT NULL,"                                            \
  "  PRIMARY KEY(resync_id, batch_seq)) WITHOUT ROWID;"

/* Version 7: rows received while the wall clock could not be trusted
 * (before the build date, or behind the newest row already journaled).
 * Their received_ms was read off that clock; each range here says which
 * rows, in which boot, and the clock's offset from CLOCK_BOOTTIME when they
 * came, so that received_ms is corrected once a trusted time is known in
 * the same boot. Additive: an agent of schema 6 reads this journal. */
#define JOURNAL_SCHEMA_V7                                                     \
  "CREATE TABLE clock_pending("                                               \
  "  first_seq INTEGER PRIMARY KEY,"                                          \
  "  last_seq INTEGER NOT NULL,"                                              \
  "  boot_id TEXT NOT NULL,"                                                  \
  "  wall_minus_boot_ms INTEGER NOT NULL);"

/* Version 8: compact sale rows (journal.compact_rows). A row's `lines`
 * may hold, as a BLOB, its lines and payments in the compact form of
 * sale_items_pack (`payments` then an empty BLOB) in place of the two JSON
 * texts: a row of about 200 bytes instead of 320, two to a 512-byte page,
 * so a sale costs fewer page writes. meta row_format says which rows the
 * journal may hold: 'json' (this step: every journal before it), or
 * 'compact' once an agent wrote a compact row, which also raises the
 * oldest reader to 8 (journal.c). The step itself is additive: an agent of
 * schema 7 reads a journal that holds only JSON rows. */
#define JOURNAL_SCHEMA_V8                                                     \
  "INSERT OR IGNORE INTO meta(key, value) VALUES('row_format', 'json');"

/* Version 9: slim sale rows (journal.row_format = slim): compact rows whose
 * content_hash holds the first 16 bytes of the sale's SHA-256 and whose
 * business_time is '' when it is the canonical text of business_time_ms
 * and utc_offset_min (sale_time_format; readers go through
 * journal__sale_time). meta row_format 'slim' once an agent wrote one,
 * which raises the oldest reader to 9 (journal.c). The step adds nothing
 * to the tables (additive): an agent of schema 8 reads a journal of JSON
 * or compact rows. */
#define JOURNAL_SCHEMA_V9 "SELECT 1;"

/* Version 10: where each ingest source that reads from elsewhere (the spool
 * directory's file in progress, later a vendor database's watermark) has
 * got to, written in the same transaction as the sales it read
 * (journal_write.progress_source), so that a restart resumes exactly after
 * what was journaled. `position` is the source's own text. Additive: an
 * agent of schema 9 reads this journal (it never writes the table). */
#define JOURNAL_SCHEMA_V10                                                    \
  "CREATE TABLE ingest_progress("                                             \
  "  source TEXT PRIMARY KEY,"                                                \
  "  position TEXT NOT NULL,"                                                 \
  "  updated_ms INTEGER NOT NULL);"

/* A source's position: set with its write's rows, read back at any time. */
#define JOURNAL_SQL_PUT_PROGRESS                                              \
  "INSERT INTO ingest_progress(source, position, updated_ms) VALUES(?1, ?2, ?3)" \
  " ON CONFLICT(source) DO UPDATE SET position = excluded.position,"          \
  " updated_ms = excluded.updated_ms"
#define JOURNAL_SQL_DELETE_PROGRESS "DELETE FROM ingest_progress WHERE source = ?1"
#define JOURNAL_SQL_GET_PROGRESS "SELECT position FROM ingest_progress WHERE source = ?1"

#define JOURNAL_SQL_COMMAND_COLUMNS                                           \
  "command_id, kind, state, issued_ms, issued_by, recorded_ms, updated_ms,"   \
  " from_ms, to_ms, upto_seq, done_sales, total_sales, available_from_ms,"    \
  " incomplete, message, replay_batch_seq, replay_acked_batch_seq,"           \
  " replay_cut_seq, replay_acked_seq"

/* A command as recorded; REPLACE keeps one row per command_id. */
#define JOURNAL_SQL_PUT_COMMAND                                               \
  "INSERT OR REPLACE INTO commands(" JOURNAL_SQL_COMMAND_COLUMNS ")"          \
  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15," \
  " ?16, ?17, ?18, ?19)"

#define JOURNAL_SQL_GET_COMMAND                                               \
  "SELECT " JOURNAL_SQL_COMMAND_COLUMNS " FROM commands WHERE command_id = ?1"

/* What heartbeats and the status page show, newest first: every command
 * not finished (never cut off: it is resumed and reported from this list),
 * and the ?2 newest of those finished since ?1. */
#define JOURNAL_SQL_RECENT_COMMANDS                                           \
  "SELECT " JOURNAL_SQL_COMMAND_COLUMNS " FROM commands WHERE state <= 2"     \
  " UNION ALL SELECT * FROM (SELECT " JOURNAL_SQL_COMMAND_COLUMNS             \
  " FROM commands WHERE state > 2 AND updated_ms >= ?1"                       \
  " ORDER BY recorded_ms DESC LIMIT ?2) ORDER BY recorded_ms DESC"

/* A resync's rows: sales and adjustments in (?1, ?2] whose business time
 * is in [?3, ?4): rowid ranges, filtered. */
#define JOURNAL_SQL_REPLAY_SALES                                              \
  "SELECT seq, sale_id, kind, original_sale_id, terminal_id, cashier_id,"     \
  " channel, delivery_partner, business_time, business_time_ms,"              \
  " utc_offset_min, currency, currency_exponent, total_minor, lines,"         \
  " payments, received_ms FROM sales WHERE seq > ?1 AND seq <= ?2"            \
  " AND business_time_ms >= ?3 AND business_time_ms < ?4 ORDER BY seq LIMIT ?5"

#define JOURNAL_SQL_REPLAY_ROWS                                               \
  "SELECT seq, business_time_ms, deltas FROM sales WHERE seq > ?1 AND seq <= ?2" \
  " AND business_time_ms >= ?3 AND business_time_ms < ?4"                     \
  " UNION ALL SELECT seq, business_time_ms, deltas FROM adjustments"          \
  " WHERE seq > ?1 AND seq <= ?2 AND business_time_ms >= ?3"                  \
  " AND business_time_ms < ?4 ORDER BY 1"

/* A resync's sales in the seq window (?1, ?2]: a rowid range. */
#define JOURNAL_SQL_REPLAY_COUNT                                              \
  "SELECT count(*) FROM sales WHERE seq > ?1 AND seq <= ?2"                   \
  " AND business_time_ms >= ?3 AND business_time_ms < ?4"

/* Where counting a resync's sales stands: replay_batches row batch_seq -1
 * (first_seq: counted up to this seq); none once counted (or recorded by
 * an agent that counted at once). Never a replay batch (those are >= 1). */
#define JOURNAL_SQL_GET_COUNT_CURSOR                                          \
  "SELECT first_seq FROM replay_batches WHERE resync_id = ?1 AND batch_seq = -1"
#define JOURNAL_SQL_PUT_COUNT_CURSOR                                          \
  "INSERT OR REPLACE INTO replay_batches(resync_id, batch_seq, first_seq,"    \
  " last_seq, sale_count, created_ms) VALUES(?1, -1, ?2, ?2, 0, 0)"
#define JOURNAL_SQL_DELETE_COUNT_CURSOR                                       \
  "DELETE FROM replay_batches WHERE resync_id = ?1 AND batch_seq = -1"

#define JOURNAL_SQL_PUT_REPLAY_BATCH                                          \
  "INSERT INTO replay_batches(resync_id, batch_seq, first_seq, last_seq,"     \
  " sale_count, created_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6)"

#define JOURNAL_SQL_GET_REPLAY_BATCH                                          \
  "SELECT first_seq, last_seq, sale_count, created_ms FROM replay_batches"    \
  " WHERE resync_id = ?1 AND batch_seq = ?2"

#define JOURNAL_SQL_REPLAY_SALES_ACKED                                        \
  "SELECT coalesce(sum(sale_count), 0), coalesce(max(last_seq), 0)"           \
  " FROM replay_batches WHERE resync_id = ?1 AND batch_seq > ?2 AND batch_seq <= ?3"

/* Retention's hold: the first row any running resync may still send. */
#define JOURNAL_SQL_REPLAY_HOLD                                               \
  "SELECT min(coalesce((SELECT r.first_seq FROM replay_batches r"             \
  " WHERE r.resync_id = c.command_id AND r.batch_seq = c.replay_acked_batch_seq)," \
  " c.replay_acked_seq + 1)) FROM commands c WHERE c.state = 2 AND c.kind = 1"

/* The last seq a row holds (sale or adjustment; 0 = none): two lookups on
 * the primary keys. Not the seq counter, which after an unclean stop is
 * moved past seqs no row will ever have. */
#define JOURNAL_SQL_LAST_ROW_SEQ                                              \
  "SELECT max(coalesce((SELECT max(seq) FROM sales), 0),"                     \
  " coalesce((SELECT max(seq) FROM adjustments), 0))"

/* The oldest business time the journal holds (0 = no sale). */
#define JOURNAL_SQL_OLDEST_SALE_TIME "SELECT coalesce(min(business_time_ms), 0) FROM sales"
/* The business time of the lowest seq: at start-up, the oldest sale's
 * time without a scan (a sale posted late by an offline terminal can be
 * older: the figure is read exactly, with the scan above, after the next
 * deletion and before a resync uses it). */
#define JOURNAL_SQL_LOWEST_SALE_TIME                                          \
  "SELECT coalesce((SELECT business_time_ms FROM sales ORDER BY seq LIMIT 1), 0)"

/* ?19 is the seq, handed out by the writer (journal_cover_seqs): at or
 * below the reserved counter, so AUTOINCREMENT leaves sqlite_sequence
 * unwritten. */
#define JOURNAL_SQL_INSERT_SALE                                               \
  "INSERT INTO sales(sale_id, content_hash, kind, original_sale_id,"          \
  " terminal_id, cashier_id, channel, delivery_partner, business_time,"       \
  " business_time_ms, utc_offset_min, currency, currency_exponent,"           \
  " total_minor, lines, payments, received_ms, deltas, seq)"                  \
  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"      \
  " ?15, ?16, ?17, ?18, ?19)"

/* ---- inventory ------------------------------------------------------------ */

#define JOURNAL_SQL_INSERT_ADJUSTMENT                                         \
  "INSERT INTO adjustments(seq, adjustment_id, content_hash, kind,"           \
  " material_id, unit, quantity_milli, business_time, business_time_ms,"      \
  " utc_offset_min, reason, note, received_ms, deltas)"                       \
  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"

/* A refund or void gives back what its original consumed: the recipes in
 * force at the original's business time. */
#define JOURNAL_SQL_ORIGINAL_TIME "SELECT business_time_ms FROM sales WHERE sale_id = ?1"

#define JOURNAL_SQL_INSERT_NAME                                               \
  "INSERT INTO stock_names(name_id, name, unit) VALUES(?1, ?2, ?3)"
#define JOURNAL_SQL_GET_NAMES "SELECT name_id, name, unit FROM stock_names ORDER BY name_id"

#define JOURNAL_SQL_FIND_ADJUSTMENT                                           \
  "SELECT seq, content_hash FROM adjustments WHERE adjustment_id = ?1"

/* The sales' seq counter moved to ?1 by an adjustment (the row exists
 * once anything was journaled; START makes it for a first row). */
#define JOURNAL_SQL_BUMP_SEQ                                                  \
  "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'sales' AND seq < ?1"
#define JOURNAL_SQL_START_SEQ                                                 \
  "INSERT INTO sqlite_sequence(name, seq) SELECT 'sales', ?1"                 \
  " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'sales')"

/* Every row in (?1, ?2] with its deltas, seq order: both are rowid
 * ranges, so cheap at any journal size. */
#define JOURNAL_SQL_ROW_DELTAS                                                \
  "SELECT seq, business_time_ms, deltas FROM sales WHERE seq > ?1 AND seq <= ?2" \
  " UNION ALL SELECT seq, business_time_ms, deltas FROM adjustments"          \
  " WHERE seq > ?1 AND seq <= ?2 ORDER BY 1"

#define JOURNAL_SQL_BASE_ADD                                                  \
  "INSERT INTO stock_base(material_id, unit, on_hand_milli) VALUES(?1, ?2, ?3)" \
  " ON CONFLICT(material_id) DO UPDATE SET"                                   \
  " on_hand_milli = on_hand_milli + excluded.on_hand_milli"

#define JOURNAL_SQL_GET_BASE "SELECT material_id, unit, on_hand_milli FROM stock_base"

/* The kept stock figures (journal_stock.c, "the kept figures"): meta
 * stock_kept (a BLOB of stock_deltas_encode), and the last row seq and the
 * sealing cursor they were written at. No row when one is missing. No
 * schema step: meta takes any key, and an agent that does not know these
 * leaves them alone (an open tells what they still cover). */
#define JOURNAL_SQL_STOCK_KEPT                                                \
  "SELECT k.value, CAST(s.value AS INTEGER), CAST(c.value AS INTEGER)"        \
  " FROM meta k, meta s, meta c WHERE k.key = 'stock_kept'"                   \
  " AND typeof(k.value) = 'blob' AND s.key = 'stock_kept_seq'"                \
  " AND c.key = 'stock_kept_sealed'"
#define JOURNAL_SQL_STOCK_KEPT_FORGET                                         \
  "DELETE FROM meta WHERE key IN ('stock_kept', 'stock_kept_seq',"            \
  " 'stock_kept_sealed')"
/* The lowest row seq held, sale or adjustment (two primary-key lookups;
 * INT64_MAX when none): retention deletes from the oldest, so every row
 * from there on is still held. */
#define JOURNAL_SQL_LOWEST_ROW_SEQ                                            \
  "SELECT coalesce(min((SELECT min(seq) FROM sales),"                         \
  " (SELECT min(seq) FROM adjustments)), (SELECT min(seq) FROM sales),"       \
  " (SELECT min(seq) FROM adjustments), 9223372036854775807)"

/* A new journal takes over, from the one moved aside ("previous"), its
 * recipes (every version: a sale journaled late still needs its own), the
 * adjustments the collector is not known to hold (seq above ?1), after the
 * carried sales and in their order, under new seqs from ?2 on, and its
 * stored base (computed in C: see journal__stock_import_previous). */
#define JOURNAL_SQL_IMPORT_RECIPE_VERSIONS                                    \
  "INSERT INTO main.recipe_versions SELECT * FROM previous.recipe_versions"
#define JOURNAL_SQL_IMPORT_RECIPE_COMPONENTS                                  \
  "INSERT INTO main.recipe_components SELECT * FROM previous.recipe_components"
#define JOURNAL_SQL_IMPORT_NAMES                                              \
  "INSERT INTO main.stock_names SELECT * FROM previous.stock_names"
#define JOURNAL_SQL_IMPORT_ADJUSTMENTS                                        \
  "INSERT INTO main.adjustments(seq, adjustment_id, content_hash, kind,"      \
  " material_id, unit, quantity_milli, business_time, business_time_ms,"      \
  " utc_offset_min, reason, note, received_ms, deltas)"                       \
  " SELECT ?2 + row_number() OVER (ORDER BY seq) - 1, adjustment_id,"         \
  " content_hash, kind, material_id, unit, quantity_milli, business_time,"    \
  " business_time_ms, utc_offset_min, reason, note, received_ms, deltas"      \
  " FROM previous.adjustments WHERE seq > ?1 ORDER BY seq"
#define JOURNAL_SQL_PREVIOUS_BASE                                             \
  "SELECT material_id, unit, on_hand_milli FROM previous.stock_base"
#define JOURNAL_SQL_PREVIOUS_SEALED                                           \
  "SELECT coalesce((SELECT CAST(value AS INTEGER) FROM previous.meta"         \
  " WHERE key = 'sealed_last_seq'), 0)"
#define JOURNAL_SQL_PREVIOUS_ROW_DELTAS                                       \
  "SELECT deltas FROM previous.sales WHERE seq > ?1 AND seq <= ?2"            \
  " UNION ALL SELECT deltas FROM previous.adjustments"                        \
  " WHERE seq > ?1 AND seq <= ?2"

/* Retention: an acknowledged batch's adjustments go with its sales. */
#define JOURNAL_SQL_DELETE_BATCH_ADJUSTMENTS                                  \
  "DELETE FROM adjustments WHERE seq BETWEEN ?1 AND ?2"

#define JOURNAL_SQL_FIND_SALE "SELECT seq, content_hash FROM sales WHERE sale_id = ?1"

#define JOURNAL_SQL_BEGIN "BEGIN IMMEDIATE"
#define JOURNAL_SQL_COMMIT "COMMIT"
#define JOURNAL_SQL_ROLLBACK "ROLLBACK"
#define JOURNAL_SQL_SAVEPOINT "SAVEPOINT write"
#define JOURNAL_SQL_RELEASE "RELEASE write"
#define JOURNAL_SQL_ROLLBACK_TO "ROLLBACK TO write"

#define JOURNAL_SQL_GET_META "SELECT value FROM meta WHERE key = ?1"
#define JOURNAL_SQL_PUT_META "INSERT INTO meta(key, value) VALUES(?1, ?2)"

#define JOURNAL_SQL_SET_META                                                  \
  "INSERT INTO meta(key, value) VALUES(?1, ?2)"                               \
  " ON CONFLICT(key) DO UPDATE SET value = excluded.value"

/* Every part is a lookup (the last seq, the newest row's arrival), so
 * cheap at any journal size: the sales held and those not acknowledged are
 * not counted here but kept (JOURNAL_SQL_SALES_COUNTED,
 * JOURNAL_SQL_UNSENT_KEPT). */
#define JOURNAL_SQL_META_SEQ(key)                                             \
  "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = '" key "'), 0)"
/* The last seq handed out: the highest row of either kind, or what meta
 * says was used without a row left (seq_floor: a skip; acked_last_seq:
 * rows deleted by retention are acknowledged), or the counter itself when
 * it is exact: written by AUTOINCREMENT (an agent before the reserve, or
 * rows carried over), not the reserve meta seq_reserved names. */
#define JOURNAL_SQL_LAST_SEQ                                                  \
  "max(coalesce((SELECT max(seq) FROM sales), 0),"                            \
  " coalesce((SELECT max(seq) FROM adjustments), 0),"                         \
  " " JOURNAL_SQL_META_SEQ("seq_floor") ","                                   \
  " " JOURNAL_SQL_META_SEQ("acked_last_seq") ","                              \
  " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'sales'"           \
  " AND seq IS NOT (SELECT CAST(value AS INTEGER) FROM meta"                  \
  " WHERE key = 'seq_reserved')), 0))"
/* The seq counter as it stands (a reserve or exact): seqs up to it are
 * covered. */
#define JOURNAL_SQL_SEQ_COUNTER                                               \
  "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'sales'), 0)"
#define JOURNAL_SQL_COUNTS                                                    \
  "SELECT " JOURNAL_SQL_LAST_SEQ ","                                          \
  " coalesce((SELECT received_ms FROM sales ORDER BY seq DESC LIMIT 1), 0)"

/* The sales not acknowledged, kept rather than counted (journal_batch.c,
 * journal__count_unsent): meta sales_unsent_kept sales above seq
 * sales_unsent_acked (the acknowledged prefix then) and at or below
 * sales_unsent_seq. No row when one is missing (then counted, once). */
#define JOURNAL_SQL_UNSENT_KEPT                                               \
  "SELECT CAST(u.value AS INTEGER), CAST(s.value AS INTEGER),"                \
  " CAST(a.value AS INTEGER) FROM meta u, meta s, meta a"                     \
  " WHERE u.key = 'sales_unsent_kept' AND s.key = 'sales_unsent_seq'"         \
  " AND a.key = 'sales_unsent_acked'"
#define JOURNAL_SQL_UNSENT_KEPT_FORGET                                        \
  "DELETE FROM meta WHERE key IN ('sales_unsent_kept', 'sales_unsent_seq',"   \
  " 'sales_unsent_acked')"

/* The sales held, kept rather than counted (no write per sale): meta
 * sales_counted is the number of sales rows at or below seq
 * sales_counted_seq, and sales_counted_min the lowest of them (0: none)
 * when that was written. Rows at or below sales_counted_seq never appear
 * later (seqs only grow), so the figure stays exact until rows are deleted;
 * retention deletes the oldest, which moves the lowest: an agent that does
 * not keep these keys (an older release, rolled back to) and deleted rows
 * leaves a sales_counted_min that no longer matches, and the next start
 * counts again. The agent moves them in the seal's and the retention's
 * transactions. No row when a key is missing (then counted, once). */
#define JOURNAL_SQL_SALES_COUNTED                                             \
  "SELECT CAST(c.value AS INTEGER), CAST(s.value AS INTEGER),"                \
  " CAST(m.value AS INTEGER),"                                                \
  " coalesce((SELECT min(seq) FROM sales WHERE seq <= CAST(s.value AS INTEGER)), 0)"\
  " FROM meta c, meta s, meta m WHERE c.key = 'sales_counted'"                \
  " AND s.key = 'sales_counted_seq' AND m.key = 'sales_counted_min'"
/* The sales rows in (?1, ?2]: a rowid range. */
#define JOURNAL_SQL_SALES_IN_RANGE                                            \
  "SELECT count(*) FROM sales WHERE seq > ?1 AND seq <= ?2"
/* Every sales row, and the newest seq: the one full count, when the kept
 * figure is missing or no longer matches the table. */
#define JOURNAL_SQL_SALES_ALL                                                 \
  "SELECT count(*), coalesce(max(seq), 0), coalesce(min(seq), 0) FROM sales"
/* ?1 count, ?2 the seq it counts to, ?3 the lowest sales seq at or below. */
#define JOURNAL_SQL_SALES_COUNTED_SET                                         \
  "INSERT INTO meta(key, value) VALUES('sales_counted', ?1),"                 \
  " ('sales_counted_seq', ?2), ('sales_counted_min', ?3)"                     \
  " ON CONFLICT(key) DO UPDATE SET value = excluded.value"
/* The lowest sales seq at or below ?1 (0: none). */
#define JOURNAL_SQL_SALES_LOWEST                                              \
  "SELECT coalesce(min(seq), 0) FROM sales WHERE seq <= ?1"

/* The oldest unsent sale's arrival: a rowid range, so cheap at any size. */
#define JOURNAL_SQL_OLDEST_UNSENT                                             \
  "SELECT received_ms FROM sales WHERE seq > ?1 ORDER BY seq LIMIT 1"

/* ---- batches ---------------------------------------------------------- */

/* The oldest unsealed sales (seq above ?2, the sealing cursor), in seq
 * order: a range of the rowid, so cheap at any journal size. */
#define JOURNAL_SQL_UNSEALED                                                  \
  "SELECT seq, sale_id, kind, original_sale_id, terminal_id, cashier_id,"     \
  " channel, delivery_partner, business_time, business_time_ms,"              \
  " utc_offset_min, currency, currency_exponent, total_minor, lines,"         \
  " payments, received_ms FROM sales WHERE seq > ?2"                          \
  " ORDER BY seq LIMIT ?1"

#define JOURNAL_SQL_HAS_UNSEALED                                              \
  "SELECT 1 FROM sales WHERE seq > ?2 AND seq <= ?1"                          \
  " UNION ALL SELECT 1 FROM adjustments WHERE seq > ?2 AND seq <= ?1 LIMIT 1"

#define JOURNAL_SQL_INSERT_BATCH                                              \
  "INSERT INTO batches(batch_seq, kind, resync_id, first_seq, last_seq,"      \
  " sale_count, body, created_ms, attempts, last_attempt_ms)"                 \
  " VALUES(?1, 'live', NULL, ?2, ?3, ?4, ?5, ?6, 1, ?6)"

#define JOURNAL_SQL_GET_BATCH                                                 \
  "SELECT first_seq, last_seq, sale_count, body, created_ms, attempts,"       \
  " acked_ms FROM batches WHERE batch_seq = ?1"

#define JOURNAL_SQL_ATTEMPT_BATCH                                             \
  "UPDATE batches SET attempts = attempts + 1, last_attempt_ms = ?2"          \
  " WHERE batch_seq = ?1"

#define JOURNAL_SQL_ACK_BATCHES                                               \
  "UPDATE batches SET acked_ms = ?2 WHERE batch_seq <= ?1 AND acked_ms IS NULL"

/* Sales in batches (?1, ?2]: what an acknowledgement takes off "unsent". */
#define JOURNAL_SQL_SALES_IN_BATCHES                                          \
  "SELECT coalesce(sum(sale_count), 0) FROM batches"                          \
  " WHERE batch_seq > ?1 AND batch_seq <= ?2"

#define JOURNAL_SQL_ACKED_ABOVE                                               \
  "SELECT count(*) FROM batches WHERE batch_seq >= ?1 AND acked_ms IS NOT NULL"

/* Batches cover contiguous seq ranges in batch order, so everything from
 * the first seq of batch N on is in batch N or later, or unsealed: deleting
 * those batches unseals the sales from ?1 (batch N's first seq) to ?2 (the
 * sealing cursor). */
#define JOURNAL_SQL_COUNT_FROM_SEQ "SELECT count(*) FROM sales WHERE seq BETWEEN ?1 AND ?2"

/* The oldest batch still stored (retention deletes the oldest acknowledged
 * ones): what the uplink can resend from when the collector asks for an
 * older one. */
#define JOURNAL_SQL_OLDEST_BATCH "SELECT coalesce(min(batch_seq), 0) FROM batches"

#define JOURNAL_SQL_DELETE_UNACKED_FROM                                       \
  "DELETE FROM batches WHERE batch_seq >= ?1 AND acked_ms IS NULL"

/* Retention: the oldest acknowledged batches acknowledged before ?1, never
 * above the acknowledged prefix ?2, nor holding a row at or above ?4 (the
 * first row a running resync has yet to send). */
#define JOURNAL_SQL_EXPIRED_BATCHES                                           \
  "SELECT batch_seq, first_seq, last_seq FROM batches"                        \
  " WHERE acked_ms IS NOT NULL AND acked_ms < ?1 AND batch_seq <= ?2"         \
  " AND last_seq < ?4 ORDER BY batch_seq LIMIT ?3"

/* A batch's sales: the seq range it covers, at most ?3 of them at a time
 * (each deleted row rewrites its pages into the WAL). */
#define JOURNAL_SQL_DELETE_BATCH_SALES                                        \
  "DELETE FROM sales WHERE seq IN (SELECT seq FROM sales"                     \
  " WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq LIMIT ?3)"

#define JOURNAL_SQL_DELETE_BATCH                                              \
  "DELETE FROM batches WHERE batch_seq = ?1 AND acked_ms IS NOT NULL"

#define JOURNAL_SQL_PAGE_COUNT "PRAGMA page_count"

/* ---- the seq high-water mark --------------------------------------------- */

/* A new journal takes the sales of the one moved aside (attached as
 * "previous") that the collector has not acknowledged (seq above ?1), in
 * seq order, under new seqs. */
#define JOURNAL_SQL_ATTACH_PREVIOUS "ATTACH DATABASE ?1 AS previous"
#define JOURNAL_SQL_DETACH_PREVIOUS "DETACH DATABASE previous"
#define JOURNAL_SQL_IMPORT_PREVIOUS                                           \
  "INSERT INTO main.sales(sale_id, content_hash, kind, original_sale_id,"     \
  " terminal_id, cashier_id, channel, delivery_partner, business_time,"       \
  " business_time_ms, utc_offset_min, currency, currency_exponent,"           \
  " total_minor, lines, payments, received_ms, deltas)"                       \
  " SELECT sale_id, content_hash, kind, original_sale_id, terminal_id,"       \
  " cashier_id, channel, delivery_partner, business_time, business_time_ms,"  \
  " utc_offset_min, currency, currency_exponent, total_minor, lines,"         \
  " payments, received_ms, deltas FROM previous.sales WHERE seq > ?1 ORDER BY seq"

/* After JOURNAL_SQL_IMPORT_PREVIOUS, in its transaction: the imported
 * sales keep where they were before the previous journal (matched by
 * sale_id, unique in both)... */
#define JOURNAL_SQL_IMPORT_CARRIED                                            \
  "INSERT INTO main.carried(seq, position, journal_id, previous_seq)"         \
  " SELECT m.seq, c.position, c.journal_id, c.previous_seq"                   \
  " FROM previous.carried c JOIN previous.sales p ON p.seq = c.seq"           \
  " JOIN main.sales m ON m.sale_id = p.sale_id WHERE p.seq > ?1"

/* ... and gain their place in it (?2, its journal_id) after those. */
#define JOURNAL_SQL_IMPORT_ORIGIN                                             \
  "INSERT INTO main.carried(seq, position, journal_id, previous_seq)"         \
  " SELECT m.seq, coalesce((SELECT max(c.position) + 1 FROM previous.carried" \
  " c WHERE c.seq = p.seq), 0), ?2, p.seq"                                    \
  " FROM previous.sales p JOIN main.sales m ON m.sale_id = p.sale_id"         \
  " WHERE p.seq > ?1"

/* The previous journal's clock_pending ranges (absent before schema 7),
 * mapped through sale_id and adjustment_id onto the new seqs: the rows of
 * a range stay contiguous (sales, then adjustments, are imported in seq
 * order), so each range becomes one range of sales and one of
 * adjustments, with its boot and offset: flagged, or repaired in this boot. */
#define JOURNAL_SQL_PREVIOUS_HAS_CLOCK                                        \
  "SELECT count(*) FROM previous.sqlite_master"                               \
  " WHERE type = 'table' AND name = 'clock_pending'"
#define JOURNAL_SQL_IMPORT_CLOCK_SALES                                        \
  "INSERT INTO main.clock_pending(first_seq, last_seq, boot_id,"              \
  " wall_minus_boot_ms) SELECT min(m.seq), max(m.seq), c.boot_id,"            \
  " c.wall_minus_boot_ms FROM previous.clock_pending c"                       \
  " JOIN previous.sales p ON p.seq BETWEEN c.first_seq AND c.last_seq"        \
  " JOIN main.sales m ON m.sale_id = p.sale_id WHERE p.seq > ?1"              \
  " GROUP BY c.first_seq"
#define JOURNAL_SQL_IMPORT_CLOCK_ADJUSTMENTS                                  \
  "INSERT INTO main.clock_pending(first_seq, last_seq, boot_id,"              \
  " wall_minus_boot_ms) SELECT min(m.seq), max(m.seq), c.boot_id,"            \
  " c.wall_minus_boot_ms FROM previous.clock_pending c"                       \
  " JOIN previous.adjustments p ON p.seq BETWEEN c.first_seq AND c.last_seq"  \
  " JOIN main.adjustments m ON m.adjustment_id = p.adjustment_id"             \
  " WHERE p.seq > ?1 GROUP BY c.first_seq"

/* The last seq of the rows carried over (sales, then adjustments), kept
 * in meta carried_last_seq: the batches covering them take no later row,
 * so that the collector can tell, batch by batch, whether the journal
 * they came from had them produced (Sale.carried_from). */
#define JOURNAL_SQL_SET_CARRIED_LAST                                          \
  "INSERT OR REPLACE INTO meta(key, value) SELECT 'carried_last_seq',"        \
  " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'sales'), 0)"

/* The same for the adjustments carried over (by adjustment_id, unique in
 * both), run after they were imported. */
#define JOURNAL_SQL_IMPORT_CARRIED_ADJUSTMENTS                                \
  "INSERT INTO main.carried(seq, position, journal_id, previous_seq)"         \
  " SELECT m.seq, c.position, c.journal_id, c.previous_seq"                   \
  " FROM previous.carried c JOIN previous.adjustments p ON p.seq = c.seq"     \
  " JOIN main.adjustments m ON m.adjustment_id = p.adjustment_id"             \
  " WHERE p.seq > ?1"
#define JOURNAL_SQL_IMPORT_ORIGIN_ADJUSTMENTS                                 \
  "INSERT INTO main.carried(seq, position, journal_id, previous_seq)"         \
  " SELECT m.seq, coalesce((SELECT max(c.position) + 1 FROM previous.carried" \
  " c WHERE c.seq = p.seq), 0), ?2, p.seq"                                    \
  " FROM previous.adjustments p"                                              \
  " JOIN main.adjustments m ON m.adjustment_id = p.adjustment_id"             \
  " WHERE p.seq > ?1"

/* Where the sales of seqs ?1..?2 were before, for the batch that seals
 * them: the newest JOURNAL_MAX_CARRIED places of each, in seq order,
 * oldest place first. */
#define JOURNAL_SQL_CARRIED_RANGE                                             \
  "SELECT seq, journal_id, previous_seq FROM ("                               \
  " SELECT seq, position, journal_id, previous_seq, row_number() OVER"        \
  " (PARTITION BY seq ORDER BY position DESC) AS newest FROM carried"         \
  " WHERE seq BETWEEN ?1 AND ?2) WHERE newest <= ?3 ORDER BY seq, position"

/* ---- the wall clock (schema v7, journal_clock.c) ---------------------------- */

/* Rarely run (at open, while the clock is wrong, at a repair): prepared
 * when used. */
#define JOURNAL_SQL_CLOCK_RANGES                                              \
  "SELECT first_seq, last_seq, boot_id, wall_minus_boot_ms FROM clock_pending" \
  " ORDER BY first_seq"

/* The newest row at or before seq ?1 (a primary-key lookup): walked back
 * past the rows in ranges, from memory, to the newest row not pending,
 * what a clock behind it is measured against. */
#define JOURNAL_SQL_CLOCK_SALE_AT_OR_BEFORE                                   \
  "SELECT seq, received_ms FROM sales WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1"
#define JOURNAL_SQL_CLOCK_ADJUSTMENT_AT_OR_BEFORE                             \
  "SELECT seq, received_ms FROM adjustments WHERE seq <= ?1"                  \
  " ORDER BY seq DESC LIMIT 1"

#define JOURNAL_SQL_CLOCK_ROW_TIME                                            \
  "SELECT received_ms FROM sales WHERE seq = ?1"                              \
  " UNION ALL SELECT received_ms FROM adjustments WHERE seq = ?1"

#define JOURNAL_SQL_CLOCK_PUT                                                 \
  "INSERT INTO clock_pending(first_seq, last_seq, boot_id, wall_minus_boot_ms)" \
  " VALUES(?1, ?2, ?3, ?4)"                                                   \
  " ON CONFLICT(first_seq) DO UPDATE SET last_seq = excluded.last_seq"

/* A repair: the rows in [?1, ?2] move by ?3 ms (the clock's offset from
 * CLOCK_BOOTTIME now, less the one they were read with). */
#define JOURNAL_SQL_CLOCK_FIX_SALES                                           \
  "UPDATE sales SET received_ms = received_ms + ?3 WHERE seq BETWEEN ?1 AND ?2"
#define JOURNAL_SQL_CLOCK_FIX_ADJUSTMENTS                                     \
  "UPDATE adjustments SET received_ms = received_ms + ?3"                     \
  " WHERE seq BETWEEN ?1 AND ?2"
#define JOURNAL_SQL_CLOCK_DROP "DELETE FROM clock_pending WHERE first_seq = ?1"
/* The range ?1 keeps only its rows up to ?2 (those already sealed). */
#define JOURNAL_SQL_CLOCK_TRIM_LAST                                           \
  "UPDATE clock_pending SET last_seq = ?2 WHERE first_seq = ?1"

/* After rows were deleted (retention, a full journal): the oldest row
 * still held (two primary-key lookups), below which a range means nothing. */
#define JOURNAL_SQL_CLOCK_OLDEST_HELD                                         \
  "SELECT coalesce(min((SELECT min(seq) FROM sales),"                         \
  " (SELECT min(seq) FROM adjustments)), (SELECT min(seq) FROM sales),"       \
  " (SELECT min(seq) FROM adjustments), 9223372036854775807)"
#define JOURNAL_SQL_CLOCK_FORGET "DELETE FROM clock_pending WHERE last_seq < ?1"
#define JOURNAL_SQL_CLOCK_FORGET_TRIM                                         \
  "UPDATE clock_pending SET first_seq = ?1 WHERE first_seq < ?1"

/* After a repair: the newest row's time (status page). */
#define JOURNAL_SQL_CLOCK_LAST_RECEIVED                                       \
  "SELECT received_ms FROM sales ORDER BY seq DESC LIMIT 1"

#endif
