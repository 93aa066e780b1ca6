# old_collector.sh - pos-collector of an earlier commit, built from this
# source tree's own git history, for the rollback tests of the wire
# (test_e2e_compact_sales_rolled_back.sh). Sourced after lib.sh
# (POS_SOURCE_DIR, POS_BUILD_DIR, fail, log); the model is
# tests/integration/old_agent.sh.
#
# The commit before compact sales and the sales-2 dictionary (issue 12,
# item 6): its collector knows sales-1 only.
OLD_COLLECTOR_COMMIT="${OLD_COLLECTOR_COMMIT:-a994026}"

# build_old_collector [COMMIT]: `git archive COMMIT` into a temporary
# directory, configured without the tests, only pos-collector built
# (Release). Kept under the build tree (old-collectors/COMMIT) so that a
# second run reuses it; a lock keeps two tests from building it at once.
# Sets OLD_COLLECTOR_BIN.
build_old_collector() {
  local commit="${1:-$OLD_COLLECTOR_COMMIT}"
  local dir="$POS_BUILD_DIR/old-collectors/$commit"
  OLD_COLLECTOR_BIN="$dir/build/collector/pos-collector"
  command -v git >/dev/null || fail "git is needed to build the collector of $commit"
  git -C "$POS_SOURCE_DIR" cat-file -e "$commit^{commit}" 2>/dev/null ||
    fail "the git history of the source tree does not hold commit $commit (the last commit \
before the change under test; not a git checkout, or a shallow clone?): run 'git fetch \
--unshallow' in $POS_SOURCE_DIR, or set OLD_COLLECTOR_COMMIT to a commit it holds"
  mkdir -p "$POS_BUILD_DIR/old-collectors"
  exec {OLD_COLLECTOR_LOCK}>"$POS_BUILD_DIR/old-collectors/.lock"
  flock "$OLD_COLLECTOR_LOCK"
  if [[ ! -x "$OLD_COLLECTOR_BIN" ]]; then
    local tmp
    tmp="$(mktemp -d "$POS_BUILD_DIR/old-collectors/.build-$commit.XXXXXX")"
    log "building pos-collector of $commit (once per build tree) in $tmp"
    mkdir -p "$tmp/src"
    git -C "$POS_SOURCE_DIR" archive "$commit" | tar -x -C "$tmp/src" ||
      fail "git archive $commit"
    if ! cmake -S "$tmp/src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release -DPOS_TESTS=OFF \
      >"$tmp/build.log" 2>&1 ||
      ! cmake --build "$tmp/build" --target pos-collector -j2 >>"$tmp/build.log" 2>&1; then
      tail -n 30 "$tmp/build.log" >&2
      fail "the pos-collector of $commit does not build (log above, in $tmp/build.log)"
    fi
    rm -rf "$dir"
    mv "$tmp" "$dir"
  fi
  exec {OLD_COLLECTOR_LOCK}>&-
  [[ -x "$OLD_COLLECTOR_BIN" ]] || fail "no pos-collector built for $commit at $OLD_COLLECTOR_BIN"
}
