#!/usr/bin/env bash
# The package's preinst refuses a downgrade whose agent could not read the
# journal, and lets through one that can (issue 11, item 4).
#
# A device root (this machine's root seen through an overlay, in a chroot,
# as test_image_per_device.sh builds an image) gets a newer pos-agent
# package (this .deb rebuilt under a higher version) and a journal made by
# the real agent. Then this .deb, the older version, is installed over it
# with dpkg -i:
#   1. the journal's oldest reader is above this package's schema (as a
#      newer agent's non-additive step would leave it): dpkg fails in the
#      preinst, with a message saying what is needed and what to do; the
#      newer package stays installed; the journal is unchanged;
#   2. the journal's oldest reader is this package's schema or older (an
#      additive step, or none): the downgrade installs.
# Root and mount namespaces are needed for the chroot: skipped (77) without.
set -euo pipefail
export LC_ALL=C
: "${POS_BUILD_DIR:?POS_BUILD_DIR must name the build directory}"
TEST_NAME="$(basename "$0" .sh)"
T="$(mktemp -d "${TMPDIR:-/tmp}/pos-fw-$TEST_NAME.XXXXXX")"
AGENT_PID=""
cleanup() {
  [ -z "$AGENT_PID" ] || kill -KILL "$AGENT_PID" 2>/dev/null || true
  [ "${POS_KEEP_TMP:-0}" = 1 ] || rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "$TEST_NAME: FAIL: $*" >&2; exit 1; }
log() { echo "$TEST_NAME: $*" >&2; }

if [ "$(id -u)" != 0 ] || ! unshare -m true 2>/dev/null; then
  echo "$TEST_NAME: SKIP: needs root and mount namespaces (an overlay chroot)" >&2
  exit 77
fi
[ -n "${POS_EMULATOR:-}" ] && { echo "$TEST_NAME: SKIP: a cross build's .deb" >&2; exit 77; }
command -v sqlite3 >/dev/null || fail "sqlite3 is required"

# in_root CMD...: CMD chrooted into this machine's root seen through the
# overlay $T/root, whose upper layer collects every change CMD makes.
in_root() {
  local dir="$T/root"
  mkdir -p "$dir/upper" "$dir/work" "$dir/merged"
  unshare -m --propagation private sh -ec '
    d="$1"; shift
    mount -t overlay overlay -o "lowerdir=/,upperdir=$d/upper,workdir=$d/work" "$d/merged"
    mount --rbind /dev "$d/merged/dev"
    mount -t proc proc "$d/merged/proc"
    mount -t tmpfs tmpfs "$d/merged/run"
    exec chroot "$d/merged" "$@"' in_root "$dir" "$@"
}
install_deb() {  # install_deb NAME: dpkg -i /pos-pkg/NAME in the root, output in $T/dpkg.log
  mkdir -p "$T/root/upper/pos-pkg"
  cp "$T/pkg/$1" "$T/root/upper/pos-pkg/"
  local rc=0
  in_root dpkg -i "/pos-pkg/$1" </dev/null >"$T/dpkg.log" 2>&1 || rc=$?
  rm -rf "$T/root/upper/pos-pkg"
  return "$rc"
}
installed_version() { in_root dpkg-query -W -f '${Version}' pos-agent; }

# ---- this package, and a newer version of it ------------------------------
cpack --config "$POS_BUILD_DIR/CPackConfig.cmake" -B "$T/cpack" -G DEB >"$T/cpack.log" 2>&1 ||
  { cat "$T/cpack.log"; fail "cpack"; }
mkdir -p "$T/pkg"
deb="$(ls "$T"/cpack/pos-agent_*.deb)"
version="$(dpkg-deb -f "$deb" Version)"
newer="$version+9"
cp "$deb" "$T/pkg/older.deb"
dpkg-deb -R "$deb" "$T/newer"
[ -f "$T/newer/DEBIAN/preinst" ] || fail "the package has a preinst"
schema="$(sed -n 's/^PACKAGE_SCHEMA="\([0-9]*\)"$/\1/p' "$T/newer/DEBIAN/preinst")"
[ -n "$schema" ] || fail "the preinst carries the package's journal schema" \
  "$(grep -n PACKAGE_SCHEMA "$T/newer/DEBIAN/preinst")"
sed -i "s/^Version: .*/Version: $newer/" "$T/newer/DEBIAN/control"
dpkg-deb -b --root-owner-group "$T/newer" "$T/pkg/newer.deb" >/dev/null

log "installing $newer into the device root"
install_deb newer.deb || { cat "$T/dpkg.log"; fail "dpkg -i of $newer"; }
[ "$(installed_version)" = "$newer" ] || fail "$newer is installed"

# ---- a journal made by the agent, where provisioning put it ----------------
# (a drop-in: the preinst must read the journal path as the agent does)
journal_dir="$T/root/upper/var/lib/pos-agent/store"
mkdir -p "$journal_dir" "$T/root/upper/etc/pos-agent/agent.conf.d"
printf '[journal]\npath = /var/lib/pos-agent/store/journal.db\n' \
  >"$T/root/upper/etc/pos-agent/agent.conf.d/50-provisioning.conf"
cat >"$T/agent.conf" <<EOF
[journal]
path = $T/journal.db
[api]
listen_host = 127.0.0.1
port = 0
terminal_tokens = $T/terminals
[metrics]
port = 0
EOF
printf 'T1 t1-9c2a4f0d8e7b6a51c3d2e1f0a9b8c7d6\n' >"$T/terminals"
"$POS_BUILD_DIR/agent/pos-agent" --config "$T/agent.conf" 2>"$T/agent.log" &
AGENT_PID=$!
for _ in $(seq 200); do
  grep -q 'event=ready' "$T/agent.log" && break
  kill -0 "$AGENT_PID" 2>/dev/null || { cat "$T/agent.log"; fail "the agent did not start"; }
  sleep 0.05
done
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" || fail "the agent exits 0 on SIGTERM"
AGENT_PID=""

# install_journal ORDER: the journal in the device root with its oldest
# reader (user_version) set to ORDER, as an agent that changed it that way
# leaves it; prints its digest.
install_journal() {
  cp "$T/journal.db" "$journal_dir/journal.db"
  sqlite3 "$journal_dir/journal.db" "PRAGMA user_version = $1;
    INSERT INTO meta(key, value) VALUES('oldest_reader_agent', '$newer')
      ON CONFLICT(key) DO UPDATE SET value = excluded.value;
    INSERT INTO meta(key, value) VALUES('schema_version', '$1')
      ON CONFLICT(key) DO UPDATE SET value = max(CAST(value AS INTEGER), excluded.value);
    PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
  sqlite3 "$journal_dir/journal.db" .sha3sum
}

# ---- 1. a downgrade whose agent could not read the journal ------------------
log "downgrade to $version over a journal whose oldest reader is schema $((schema + 1))"
digest="$(install_journal $((schema + 1)))"
if install_deb older.deb; then
  cat "$T/dpkg.log"
  fail "dpkg refuses the downgrade to $version (journal schema $schema): its agent could not" \
    "read the journal"
fi
grep -q "refusing to downgrade from $newer to $version" "$T/dpkg.log" ||
  { cat "$T/dpkg.log"; fail "the preinst says it refuses the downgrade"; }
grep -q "journal /var/lib/pos-agent/store/journal.db" "$T/dpkg.log" ||
  { cat "$T/dpkg.log"; fail "the preinst names the journal the drop-in configures"; }
grep -q "needs pos-agent $newer or newer" "$T/dpkg.log" ||
  { cat "$T/dpkg.log"; fail "the preinst says which agent the journal needs"; }
grep -q "move the journal aside" "$T/dpkg.log" ||
  { cat "$T/dpkg.log"; fail "the preinst says what to do"; }
[ "$(installed_version)" = "$newer" ] ||
  fail "after the refusal $newer stays installed" "$newer" "$(installed_version)"
[ "$(sqlite3 "$journal_dir/journal.db" .sha3sum)" = "$digest" ] ||
  fail "the refused downgrade leaves the journal unchanged"
[ "$(sqlite3 "$journal_dir/journal.db" 'PRAGMA user_version;')" = $((schema + 1)) ] ||
  fail "the journal's oldest reader is unchanged"
sed -n '/refusing/,/new journal/p' "$T/dpkg.log" | sed 's/^/  | /' >&2
log "ok: refused, $newer still installed, journal unchanged"

# ---- 2. a downgrade whose agent reads the journal --------------------------
log "downgrade to $version over a journal whose oldest reader is schema $schema"
install_journal "$schema" >/dev/null
install_deb older.deb || { cat "$T/dpkg.log"; fail "dpkg -i of $version over a journal it reads"; }
[ "$(installed_version)" = "$version" ] ||
  fail "the downgrade installed $version" "$version" "$(installed_version)"
log "ok: the downgrade the journal allows is installed"
echo "$TEST_NAME: PASS"
