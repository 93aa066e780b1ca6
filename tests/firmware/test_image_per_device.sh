#!/usr/bin/env bash
# An image is per-device only after first boot (issue 11, item 1).
#
# An image is built the way a firmware engineer builds one for every
# store: the .deb installed with dpkg in a chroot of this machine (its
# maintainer scripts run; no systemd). Then:
#   1. the image holds nothing secret or particular to one device: no
#      terminals file, nothing under /etc/pos-agent that the package does
#      not ship; two image builds are the same there (nothing random is made
#      at install time);
#   2. two devices flashed from that one image, each booted once (the
#      first-boot unit's ExecStart, with its condition), have each their own
#      terminal token, root:pos-agent 0640, and share none;
#   3. provisioning writes a drop-in (agent.conf.d/50-provisioning.conf):
#      the agent takes store_id and device_id from it, and an upgrade whose
#      agent.conf changed installs with stdin closed, no prompt, no
#      --force-conf*: the new profile in place, the drop-in and the token
#      untouched (and, to show the prompt is real here, the old way,
#      editing agent.conf, does stop there);
#   4. --check-config names the drop-in that set a key at fault.
#
# The chroot is this machine's root seen through an overlay in a private
# mount namespace (the image is the overlay's upper layer): root only, so
# the test is skipped (77) when it cannot mount.
set -euo pipefail
export LC_ALL=C
: "${POS_BUILD_DIR:?POS_BUILD_DIR must name the build directory}"
TEST_NAME="$(basename "$0" .sh)"
T="$(mktemp -d "${TMPDIR:-/tmp}/pos-fw-$TEST_NAME.XXXXXX")"
cleanup() { [ "${POS_KEEP_TMP:-0}" = 1 ] || rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "$TEST_NAME: FAIL: $*" >&2; exit 1; }
log() { echo "$TEST_NAME: $*" >&2; }

if [ "$(id -u)" != 0 ] || ! unshare -m true 2>/dev/null; then
  echo "$TEST_NAME: SKIP: needs root and mount namespaces (an overlay chroot)" >&2
  exit 77
fi
[ -n "${POS_EMULATOR:-}" ] && { echo "$TEST_NAME: SKIP: a cross build's .deb" >&2; exit 77; }

# in_root NAME CMD...: CMD chrooted into this machine's root seen through
# the overlay $T/NAME, whose upper layer collects every change CMD makes.
in_root() {
  local dir="$T/$1"
  shift
  mkdir -p "$dir/upper" "$dir/work" "$dir/merged"
  unshare -m --propagation private sh -ec '
    d="$1"; shift
    mount -t overlay overlay -o "lowerdir=/,upperdir=$d/upper,workdir=$d/work" "$d/merged"
    mount --rbind /dev "$d/merged/dev"
    mount -t proc proc "$d/merged/proc"
    # No running systemd in an image build: a /run of its own, empty.
    mount -t tmpfs tmpfs "$d/merged/run"
    exec chroot "$d/merged" "$@"' in_root "$dir" "$@"
}
# flash FROM TO: a device's root from an image (the upper layer, as it is).
flash() { mkdir -p "$T/$2"; cp -a "$T/$1/upper" "$T/$2/upper"; }

# ---- the package, and a later version whose profile changed ----------------
cpack --config "$POS_BUILD_DIR/CPackConfig.cmake" -B "$T/cpack" -G DEB >"$T/cpack.log" 2>&1 ||
  { cat "$T/cpack.log"; fail "cpack"; }
mkdir -p "$T/pkg"
deb="$(ls "$T"/cpack/pos-agent_*.deb)"
version="$(dpkg-deb -f "$deb" Version)"
cp "$deb" "$T/pkg/v1.deb"
dpkg-deb -R "$deb" "$T/v2"
echo "; profile of version $version+2: one comment more" >>"$T/v2/etc/pos-agent/agent.conf"
sed -i "s/^Version: .*/Version: $version+2/" "$T/v2/DEBIAN/control"
(cd "$T/v2" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | xargs -0 md5sum \
  >DEBIAN/md5sums)
dpkg-deb -b --root-owner-group "$T/v2" "$T/pkg/v2.deb" >/dev/null
shipped="$(dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|; s|/$||')"

# The debs are handed to the chroot in its upper layer (/pos-pkg).
install_in() {  # install_in ROOT DEB: dpkg -i with stdin closed, output in $T/dpkg.log
  mkdir -p "$T/$1/upper/pos-pkg"
  cp "$T/pkg/$2" "$T/$1/upper/pos-pkg/"
  local rc=0
  in_root "$1" dpkg -i "/pos-pkg/$2" </dev/null >"$T/dpkg.log" 2>&1 || rc=$?
  rm -rf "$T/$1/upper/pos-pkg"
  return "$rc"
}

# ---- 1. the image: nothing per device ---------------------------------------
for image in image image2; do
  log "building $image: dpkg -i in a chroot"
  install_in "$image" v1.deb || { cat "$T/dpkg.log"; fail "dpkg -i into the $image root"; }
done
img="$T/image/upper"
[ -f "$img/usr/bin/pos-agent" ] || fail "the image holds /usr/bin/pos-agent"
if [ -e "$img/etc/pos-agent/terminals" ]; then
  fail "the image holds /etc/pos-agent/terminals: every device flashed from it would share" \
    "its token ($(grep -v '^#' "$img/etc/pos-agent/terminals" | sed 's/ .*//' | tr '\n' ' ')...)"
fi
made="$(cd "$img" && find etc/pos-agent -mindepth 1 | sed 's|^|/|' | sort |
  grep -vxF -f <(printf '%s\n' "$shipped") || true)"
[ -z "$made" ] || fail "the image holds files under /etc/pos-agent the package does not ship: $made"
for tree in etc/pos-agent var/lib/pos-agent; do
  [ ! -e "$img/$tree" ] && [ ! -e "$T/image2/upper/$tree" ] && continue
  diff -r "$img/$tree" "$T/image2/upper/$tree" >"$T/diff" 2>&1 ||
    fail "two image builds differ in /$tree (made at random at install?): $(cat "$T/diff")"
done
log "ok: the image holds no token and nothing made at install ($(du -sh "$img" | cut -f1))"

# ---- 2. two devices, one image, first boot each ------------------------------
unit="$(find "$img/usr/lib/systemd/system" "$img/lib/systemd/system" \
  -name pos-agent-firstboot.service 2>/dev/null | head -n1 || true)"
[ -n "$unit" ] || fail "the image holds pos-agent-firstboot.service"
exec_start="$(sed -n 's/^ExecStart=//p' "$unit")"
condition="$(sed -n 's/^ConditionPathExists=!//p' "$unit")"
grep -q '^Wants=pos-agent-firstboot.service' "$(dirname "$unit")/pos-agent.service" ||
  fail "pos-agent.service pulls in pos-agent-firstboot.service"
first_boot() {  # first_boot DEVICE: the unit, as systemd would start it
  if [ -n "$condition" ] && [ -e "$T/$1/upper$condition" ]; then
    log "$1: $condition exists: first-boot unit skipped (its condition)"
    return 0
  fi
  # shellcheck disable=SC2086
  in_root "$1" $exec_start >"$T/$1.boot.log" 2>&1 ||
    { cat "$T/$1.boot.log"; fail "$1: first boot: $exec_start"; }
}
token_of() { awk '!/^#/ && NF == 2 { print $2 }' "$T/$1/upper/etc/pos-agent/terminals"; }
for dev in deviceA deviceB; do
  flash image "$dev"
  first_boot "$dev"
  f="$T/$dev/upper/etc/pos-agent/terminals"
  [ -f "$f" ] || fail "$dev: no /etc/pos-agent/terminals after its first boot"
  gid="$(awk -F: '$1 == "pos-agent" { print $3 }' "$T/$dev/upper/etc/group")"
  [ "$(stat -c '%a %u %g' "$f")" = "640 0 $gid" ] ||
    fail "$dev: terminals is $(stat -c '%a %u:%g' "$f"), not 0640 root:pos-agent ($gid)"
  [[ "$(token_of "$dev")" =~ ^[0-9a-f]{32}$ ]] || fail "$dev: token: $(cat "$f")"
  grep -q "$(token_of "$dev")" "$T/$dev.boot.log" && fail "$dev: the token was logged"
done
[ "$(token_of deviceA)" != "$(token_of deviceB)" ] ||
  fail "two devices flashed from one image share the terminal token"
before="$(token_of deviceA)"
first_boot deviceA  # the second boot: nothing made again
[ "$(token_of deviceA)" = "$before" ] || fail "a later boot replaced the device's token"
log "ok: each device made its own token at first boot; none shared"

# ---- 3. provisioning in a drop-in; the upgrade does not prompt ------------------
drop="$T/deviceA/upper/etc/pos-agent/agent.conf.d/50-provisioning.conf"
mkdir -p "$(dirname "$drop")"
printf '[agent]\nstore_id = S0042\ndevice_id = till-3\n' >"$drop"
cp "$drop" "$T/provisioned.conf"
in_root deviceA pos-agent --check-config --config /etc/pos-agent/agent.conf >"$T/effective" ||
  fail "--check-config with the provisioning drop-in"
grep -qx 'agent.store_id = S0042' "$T/effective" && grep -qx 'agent.device_id = till-3' \
  "$T/effective" || fail "the agent takes store_id, device_id from the drop-in: $(head -3 "$T/effective")"
install_in deviceA v2.deb || { cat "$T/dpkg.log"; fail "upgrade of a provisioned device"; }
! grep -qi 'conffile\|configuration file' "$T/dpkg.log" ||
  fail "the upgrade asked about a configuration file: $(cat "$T/dpkg.log")"
cmp -s "$T/v2/etc/pos-agent/agent.conf" "$T/deviceA/upper/etc/pos-agent/agent.conf" ||
  fail "the upgrade installed the new profile"
cmp -s "$T/provisioned.conf" "$drop" || fail "the upgrade left the drop-in as provisioned"
[ "$(token_of deviceA)" = "$before" ] || fail "the upgrade left the device's token"
[ -z "$(find "$T/deviceA/upper/etc/pos-agent" -name '*.dpkg-*')" ] ||
  fail "dpkg left $(find "$T/deviceA/upper/etc/pos-agent" -name '*.dpkg-*')"
in_root deviceA pos-agent --check-config --config /etc/pos-agent/agent.conf >"$T/effective"
grep -qx 'agent.store_id = S0042' "$T/effective" || fail "after the upgrade: store_id"
log "ok: provisioned in a drop-in, upgraded without a prompt, nothing lost"

# The old way, to show the prompt is real in this harness: an edited
# conffile stops the unattended upgrade.
sed -i 's/^store_id =.*/store_id = S0043/' "$T/deviceB/upper/etc/pos-agent/agent.conf"
if install_in deviceB v2.deb; then
  fail "editing the conffile and upgrading was expected to stop at dpkg's prompt"
fi
grep -q 'conffile prompt' "$T/dpkg.log" || fail "the old way failed otherwise: $(cat "$T/dpkg.log")"
log "ok: (the old way, agent.conf edited, stops at the conffile prompt)"

# ---- 4. an error names the drop-in that set the key ---------------------------
conf="$T/check/agent.conf"
mkdir -p "$conf.d"
printf '[uplink]\nurl = https://127.0.0.1:1\n' >"$conf"
printf '[agent]\nstore_id = S0042\n' >"$conf.d/10-store.conf"
printf '; blank\n[agent]\ndevice_id =\n' >"$conf.d/50-provisioning.conf"
rc=0
"$POS_BUILD_DIR/agent/pos-agent" --check-config --config "$conf" >/dev/null 2>"$T/err" || rc=$?
[ "$rc" != 0 ] && grep -q "50-provisioning.conf:3: \[agent\] device_id is empty" "$T/err" ||
  fail "--check-config names the drop-in at fault: rc $rc: $(cat "$T/err")"
printf '[agent]\nstoreid = S1\n' >"$conf.d/60-typo.conf"
"$POS_BUILD_DIR/agent/pos-agent" --check-config --config "$conf" >/dev/null 2>"$T/err" || true
grep -q "60-typo.conf:2: unknown key storeid in \[agent\]" "$T/err" ||
  fail "--check-config names the drop-in with an unknown key: $(cat "$T/err")"
log "ok: --check-config names the drop-in at fault"
echo "$TEST_NAME: PASS"
