#!/usr/bin/env bash
# The seq high-water mark beside the journal (journal.db-hwm) gained a field
# (sb=, the last batch sealed). A mark written by an agent before that must
# be read as it is after an upgrade: the journal goes on under its
# journal_id, nothing is reported lost, and the next mark written carries
# the new field. (A mark the agent cannot read at all is test_damaged_journal.)
source "$(dirname "$0")/lib.sh"

write_tokens
write_config
start_agent
for i in 1 2 3; do
  post_sales "$TOKEN_T1" "$(sale_json sale_id="\"U-$i\"")"
  expect_status "sale U-$i" 201
done
stop_agent
id_before="$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
HWM="$JOURNAL-hwm"
line="$(head -c 512 "$HWM" | tr -d '\0' | head -n 1)"
assert_match "the mark as written now carries sb=" ' sb=[0-9]+$' "$line"

# The same mark as the previous agent wrote it: no sb=, its own digest,
# both 512-byte slots.
old="${line% sb=*}"
digest="$(printf '%s\n' "$old" | sha256sum | cut -d' ' -f1)"
slot="$(printf '%s\nh=%s\n' "$old" "$digest")"
{
  for _ in 1 2; do
    printf '%s' "$slot"
    head -c $((512 - ${#slot})) /dev/zero
  done
} >"$HWM"
assert_eq "the old-format mark is two slots" 1024 "$(stat -c %s "$HWM")"

start_agent
assert_eq "the journal goes on under its journal_id" "$id_before" \
  "$(sql "SELECT value FROM meta WHERE key = 'journal_id';")"
if grep -qE 'event=(journal_lost_sales|hwm_damaged)' "$AGENT_LOG"; then
  fail "an old-format mark is read, not taken for a loss or damage" "no such event" \
    "$(grep -E 'event=(journal_lost_sales|hwm_damaged)' "$AGENT_LOG")"
fi
post_sales "$TOKEN_T1" "$(sale_json sale_id='"U-4"')"
expect_status "a sale after the upgrade" 201
stop_agent
assert_match "the next mark carries sb= again" ' sb=[0-9]+$' \
  "$(head -c 512 "$HWM" | tr -d '\0' | head -n 1)"
