# old_agent.sh - pos-agent of an earlier release, built from this source
# tree's own git history, for the upgrade and rollback tests
# (test_upgrade_rollback.sh, tests/bench/upgrade_bench.sh). Sourced after
# lib.sh (POS_SOURCE_DIR, POS_BUILD_DIR, fail, log).
#
# The release before the journal recorded its oldest reader: schema 6,
# whose agent refuses a journal only when user_version > 6.
OLD_AGENT_COMMIT="${OLD_AGENT_COMMIT:-5d465b4}"
source "$(dirname "${BASH_SOURCE[0]}")/old_build.sh"

# build_old_agent [COMMIT]: pos-agent of COMMIT (old_build.sh), configured
# without the collector and the tests. Sets OLD_AGENT_BIN.
build_old_agent() {
  build_old_program "${1:-$OLD_AGENT_COMMIT}" agent/pos-agent old-agents OLD_AGENT_COMMIT \
    -DPOS_COLLECTOR=OFF -DPOS_TESTS=OFF
  OLD_AGENT_BIN="$OLD_PROGRAM_BIN"
}

# copy_sales N PREFIX: N more sales in the journal (the agent stopped),
# made by SQLite from the newest journaled sale row (so every column is as
# the agent writes it), each with its own sale_id PREFIX-<i> and a new seq.
copy_sales() {
  local n="$1" prefix="$2"
  sqlite3 "$JOURNAL" "
    PRAGMA journal_mode=WAL;
    INSERT INTO sales(sale_id, content_hash, kind, original_sale_id, terminal_id, cashier_id,
      channel, delivery_partner, business_time, business_time_ms, utc_offset_min, currency,
      currency_exponent, total_minor, lines, payments, received_ms, deltas)
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $n)
    SELECT '$prefix-' || i, randomblob(32), kind, original_sale_id, terminal_id, cashier_id,
      channel, delivery_partner, business_time, business_time_ms, utc_offset_min, currency,
      currency_exponent, total_minor, lines, payments, received_ms, deltas
    FROM n, (SELECT * FROM sales ORDER BY seq DESC LIMIT 1);" >/dev/null ||
    fail "copy_sales $n: sqlite3 failed on $JOURNAL"
}

# journal_to_schema_2 FILE: the journal FILE (agent stopped) put back into
# the shape of the first releases, schema 2, as JOURNAL_SCHEMA_V1 and V2
# made it: the tables of steps 3 to 7 gone, sales.batch_seq and its index
# back, batch_seq set in every row as those releases set it when a sale was
# sealed. Its upgrade runs schema 3's table rewrite.
journal_to_schema_2() {
  local file="$1" later_tables table
  later_tables="$(sqlite3 "$file" "SELECT group_concat(name, ' ') FROM sqlite_master
    WHERE type = 'table' AND name NOT IN ('meta', 'sales', 'batches', 'sqlite_sequence');")"
  {
    for table in $later_tables; do echo "DROP TABLE $table;"; done
    cat <<'EOF'
ALTER TABLE sales DROP COLUMN deltas;
ALTER TABLE sales ADD COLUMN batch_seq INTEGER;
UPDATE sales SET batch_seq = seq / 100 + 1;
CREATE INDEX sales_unsealed ON sales(batch_seq) WHERE batch_seq IS NULL;
DELETE FROM meta WHERE key IN ('schema_version', 'oldest_reader_agent', 'sealed_last_seq',
  'sales_deleted');
PRAGMA user_version = 2;
VACUUM;
PRAGMA wal_checkpoint(TRUNCATE);
EOF
  } | sqlite3 "$file" >/dev/null || fail "journal_to_schema_2: sqlite3 failed on $file"
  [[ "$(sqlite3 "$file" "PRAGMA user_version;")" == 2 ]] || fail "$file is not at schema 2"
}
