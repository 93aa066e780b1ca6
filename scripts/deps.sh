#!/usr/bin/env bash
# Installs the Debian 12 packages that build and test the project (with sudo
# when not root). Quick when everything is already there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang git
  # clang's ASan/UBSan runtime (not a dependency of clang itself on Debian 12)
  libclang-rt-14-dev
  libsqlite3-dev libuv1-dev libcurl4-openssl-dev libmbedtls-dev
  # OpenSSL's headers for tests/tools/pos-arrival (libcurl's SSL_CTX callback); only suggested
  # by libcurl4-openssl-dev
  libssl-dev
  libprotobuf-c-dev protobuf-c-compiler libzstd-dev librdkafka-dev
  node-llhttp libinih-dev libjansson-dev libcmocka-dev
  # test tools: the journal read back, certificates, a wrong device clock (libfaketime), Kafka
  # read back, decoding, the status page in a real browser (headless), and Prometheus (promtool
  # checks /metrics; a prometheus the tests start scrapes it), and HAProxy (the ordinary TCP
  # load balancer in front of the collectors' fleet)
  sqlite3 openssl curl faketime kcat protobuf-compiler chromium prometheus haproxy
  # the .deb: dpkg-shlibdeps (CPack) and lintian (tests/firmware)
  dpkg-dev lintian
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -c "install ok installed" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# A mirror with one stale index (another architecture's, say) makes
# apt-get update fail as a whole; the install below still works for what
# it needs, and fails with apt's own message when it cannot.
$sudo apt-get update -q || echo "deps.sh: apt-get update reported errors (above); installing anyway" >&2
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
