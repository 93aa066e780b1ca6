# old_build.sh - one program of an earlier commit, built from this source
# tree's own git history: the shared part of old_agent.sh and
# tests/e2e/old_collector.sh. Sourced after lib.sh (POS_SOURCE_DIR,
# POS_BUILD_DIR, fail, log).

# build_old_program COMMIT PROGRAM CACHE COMMIT_VAR [CMAKE_ARG...]:
# `git archive COMMIT` into a temporary directory, configured with the
# CMAKE_ARGs (Release), and only PROGRAM (agent/pos-agent,
# collector/pos-collector: its path in the build tree) built. Kept under
# the build tree (CACHE/COMMIT, e.g. old-agents/5d465b4) so that a second
# test reuses it; a lock keeps two tests from building it at once.
# COMMIT_VAR names the variable that chooses another commit (for the
# message when this history lacks COMMIT). Sets OLD_PROGRAM_BIN.
build_old_program() {
  local commit="$1" program="$2" cache="$POS_BUILD_DIR/$3" commit_var="$4"
  local name="${2##*/}" lock tmp
  shift 4
  local dir="$cache/$commit"
  OLD_PROGRAM_BIN="$dir/build/$program"
  command -v git >/dev/null || fail "git is needed to build the $name of $commit"
  git -C "$POS_SOURCE_DIR" cat-file -e "$commit^{commit}" 2>/dev/null ||
    fail "the git history of the source tree does not hold commit $commit (the one the test \
compares with; not a git checkout, or a shallow clone?): run 'git fetch --unshallow' in \
$POS_SOURCE_DIR, or set $commit_var to a commit it holds"
  mkdir -p "$cache"
  exec {lock}>"$cache/.lock"
  flock "$lock"
  if [[ ! -x "$OLD_PROGRAM_BIN" ]]; then
    tmp="$(mktemp -d "$cache/.build-$commit.XXXXXX")"
    log "building $name of $commit (once per build tree) in $tmp"
    mkdir -p "$tmp/src"
    git -C "$POS_SOURCE_DIR" archive "$commit" | tar -x -C "$tmp/src" ||
      fail "git archive $commit"
    if ! cmake -S "$tmp/src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release "$@" \
      >"$tmp/build.log" 2>&1 ||
      ! cmake --build "$tmp/build" --target "$name" -j2 >>"$tmp/build.log" 2>&1; then
      tail -n 30 "$tmp/build.log" >&2
      fail "the $name of $commit does not build (log above, in $tmp/build.log)"
    fi
    rm -rf "$dir"
    mv "$tmp" "$dir"
  fi
  exec {lock}>&-
  [[ -x "$OLD_PROGRAM_BIN" ]] || fail "no $name built for $commit at $OLD_PROGRAM_BIN"
}
