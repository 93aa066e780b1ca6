# old_collector.sh - pos-collector of an earlier commit, built from this
# source tree's own git history, for the rollback tests of the wire
# (test_e2e_compact_sales_rolled_back.sh). Sourced after lib.sh
# (POS_SOURCE_DIR, POS_BUILD_DIR, fail, log), like
# tests/integration/old_agent.sh.
#
# The commit before compact sales and the sales-2 dictionary (issue 12,
# item 6): its collector knows sales-1 only.
OLD_COLLECTOR_COMMIT="${OLD_COLLECTOR_COMMIT:-a994026}"
source "$(dirname "${BASH_SOURCE[0]}")/../integration/old_build.sh"

# build_old_collector [COMMIT]: pos-collector of COMMIT
# (tests/integration/old_build.sh), configured without the tests. Sets
# OLD_COLLECTOR_BIN.
build_old_collector() {
  build_old_program "${1:-$OLD_COLLECTOR_COMMIT}" collector/pos-collector old-collectors \
    OLD_COLLECTOR_COMMIT -DPOS_TESTS=OFF
  OLD_COLLECTOR_BIN="$OLD_PROGRAM_BIN"
}
