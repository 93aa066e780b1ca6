# posdb_lib.sh - what the POS database tailer's tests and benchmark share
# (sourced after lib.sh): a vendor database in a till's own layout
# (receipts, items, money in cents) and the agent.conf sections mapping it.

# posdb_vendor_create DB: the vendor's tables, empty.
posdb_vendor_create() {
  sqlite3 -batch -bail "$1" "CREATE TABLE receipts (id INTEGER PRIMARY KEY, receipt_no TEXT NOT NULL,
      till TEXT, ts TEXT, total_cents INTEGER, pay TEXT);
    CREATE TABLE items (receipt_id INTEGER, line_no INTEGER, plu TEXT, qty,
      price_cents INTEGER, tax_cents INTEGER);
    CREATE INDEX items_receipt ON items(receipt_id);"
}

# posdb_vendor_add DB FIRST LAST PREFIX [QTY]: receipts FIRST..LAST named
# PREFIX<id>, one pizza each (12.50 + 1.30 tax = 13.80, card), written by
# the vendor in one transaction.
posdb_vendor_add() {
  sqlite3 -batch -bail "$1" ".timeout 20000" "BEGIN;
    WITH RECURSIVE n(i) AS (SELECT $2 UNION ALL SELECT i + 1 FROM n WHERE i < $3)
    INSERT INTO receipts SELECT i, '$4' || i, 'T1', '2026-11-21T18:42:05+01:00', 1380, 'card' FROM n;
    WITH RECURSIVE n(i) AS (SELECT $2 UNION ALL SELECT i + 1 FROM n WHERE i < $3)
    INSERT INTO items SELECT i, 1, 'PIZZA-MARG-L', ${5:-1}, 1250, 130 FROM n;
    COMMIT;"
}

# posdb_sections FILE DB MONEY SKU [LINE...]: appends to FILE the [posdb]
# sections mapping that layout (MONEY and the sku column given, for the
# config's own tests), each LINE added to [posdb] ("poll = 200ms").
posdb_sections() {
  local file="$1" db="$2" money="$3" sku="$4"
  shift 4
  {
    printf '\n[posdb]\npath = %s\nmoney = %s\n' "$db" "$money"
    [[ $# -gt 0 ]] && printf '%s\n' "$@"
    cat <<EOS

[posdb.sales]
table = receipts
watermark = id
sale_id = receipt_no
kind = 'sale'
terminal_id = till
business_time = ts
currency = 'EUR'
total = total_cents

[posdb.lines]
table = items
sale_key = receipt_id
order = line_no
sku = $sku
qty = qty
unit_price = price_cents
tax = tax_cents

[posdb.payments]
method = pay
amount = total_cents
EOS
  } >>"$file"
}
