#!/usr/bin/env bash
# The Buildroot and Yocto recipes build a device's agent (issue 11, item 5),
# checked against their files (no Buildroot or Yocto tree here): the agent
# alone and no tests (-DPOS_COLLECTOR=OFF -DPOS_TESTS=OFF: no librdkafka),
# both systemd units shipped; one TLS stack: mbedTLS and no libcurl (the
# uplink speaks TLS through mbedTLS itself); Buildroot: the llhttp compiled in declared (MIT), sources not redistributed; Yocto:
# systemd required of the distribution (features_check).
set -euo pipefail
: "${POS_SOURCE_DIR:?POS_SOURCE_DIR must name the source directory}"
TEST_NAME="$(basename "$0" .sh)"
fail() { echo "$TEST_NAME: FAIL: $*" >&2; exit 1; }
br="$POS_SOURCE_DIR/firmware-config/buildroot/pos-agent"
bb="$(ls "$POS_SOURCE_DIR"/firmware-config/yocto/pos-agent_*.bb)"

for f in "$br/pos-agent.mk" "$bb"; do
  for opt in -DPOS_TESTS=OFF -DPOS_COLLECTOR=OFF; do
    grep -q -- "$opt" "$f" || fail "${f##*/} configures without $opt"
  done
  ! grep -v '^[[:space:]]*#' "$f" | grep -ci rdkafka >/dev/null || fail "${f##*/} depends on librdkafka"
done
for f in "$br/Config.in" "$br/pos-agent.mk" "$bb"; do
  ! grep -v '^[[:space:]]*#' "$f" | grep -Eqi 'libcurl|\bcurl\b' ||
    fail "${f##*/} still pulls in libcurl (a second TLS stack on the device)"
done
grep -q 'select BR2_PACKAGE_MBEDTLS' "$br/Config.in" || fail "Config.in: no mbedTLS"
grep -Eq '^POS_AGENT_LICENSE = .*MIT \(llhttp\)' "$br/pos-agent.mk" ||
  fail "pos-agent.mk: the llhttp compiled in (MIT) is not declared"
grep -q '^POS_AGENT_REDISTRIBUTE = NO' "$br/pos-agent.mk" ||
  fail "pos-agent.mk: proprietary sources would go into legal-info (REDISTRIBUTE)"
grep -Eq '^inherit .*\bfeatures_check\b' "$bb" &&
  grep -q '^REQUIRED_DISTRO_FEATURES = "systemd"' "$bb" ||
  fail "${bb##*/}: systemd not required of the distribution (features_check)"
grep -q 'pos-agent-firstboot.service' "$bb" || fail "${bb##*/}: the first-boot unit is not shipped"
echo "$TEST_NAME: PASS"
