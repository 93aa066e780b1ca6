#!/usr/bin/env bash
# Test PKI, made at run time (private keys are never committed).
#
#   pki.sh init DIR                      CA, collector server cert, admin cert, a device
#                                        cert for store S001 device D1, and for the negative
#                                        tests: an expired device cert, one from another CA,
#                                        a revoked one and the CRL that revokes it
#   pki.sh device DIR STORE DEVICE       one more device cert: DIR/device-STORE-DEVICE.{crt,key}
#   pki.sh revoke DIR NAME               revoke DIR/NAME.crt and rewrite DIR/crl.pem
#   pki.sh crl-expired DIR OUT           a CRL of the CA (its revocations) past its nextUpdate
#   pki.sh crl-other DIR OUT             a CRL of the other CA
#
# Device certificates carry the SAN URI urn:pos:store:<store>:device:<device>,
# admin certificates urn:pos:admin:<name>. Keys are EC P-256 (fast to make).
set -euo pipefail

cmd=${1:?usage: pki.sh init|device|revoke|crl-expired|crl-other DIR ...}
dir=${2:?usage: pki.sh $cmd DIR ...}

ca_conf() { # $1 = CA dir
  cat <<CONF
[ca]
default_ca = test_ca
[test_ca]
dir = $1
database = $1/index.txt
new_certs_dir = $1/newcerts
serial = $1/serial
crlnumber = $1/crlnumber
certificate = $1/ca.crt
private_key = $1/ca.key
default_md = sha256
default_days = 30
default_crl_days = 30
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[leaf]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth, serverAuth
CONF
}

make_ca() { # $1 = CA dir, $2 = CN
  mkdir -p "$1/newcerts"
  : >"$1/index.txt"
  echo 1000 >"$1/serial"
  echo 1000 >"$1/crlnumber"
  ca_conf "$1" >"$1/ca.cnf"
  openssl ecparam -name prime256v1 -genkey -noout -out "$1/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$1/ca.key" -sha256 -days 30 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1/ca.crt" 2>/dev/null
}

# leaf CA_DIR OUT_PREFIX CN SAN [startdate enddate]
leaf() {
  local ca=$1 out=$2 cn=$3 san=$4 ext
  ext=$(mktemp)
  { ca_conf "$ca"; echo "subjectAltName = $san"; } >"$ext"
  sed -i 's/^\[leaf\]$/[leaf]/' "$ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$out.key" 2>/dev/null
  openssl req -new -key "$out.key" -subj "/CN=$cn" -out "$out.csr" 2>/dev/null
  if [ $# -ge 6 ]; then
    openssl ca -batch -config "$ext" -extensions leaf -startdate "$5" -enddate "$6" \
      -in "$out.csr" -out "$out.crt" 2>/dev/null
  else
    openssl ca -batch -config "$ext" -extensions leaf -in "$out.csr" -out "$out.crt" 2>/dev/null
  fi
  rm -f "$ext" "$out.csr"
  chmod 600 "$out.key"
}

gencrl() {
  openssl ca -batch -config "$dir/ca/ca.cnf" -gencrl -out "$dir/crl.pem" 2>/dev/null
}

case "$cmd" in
init)
  mkdir -p "$dir/ca" "$dir/other-ca"
  make_ca "$dir/ca" "POS Test Root CA"
  make_ca "$dir/other-ca" "Somebody Else's CA"
  cp "$dir/ca/ca.crt" "$dir/ca.crt"
  leaf "$dir/ca" "$dir/server" "collector.test" "DNS:localhost, IP:127.0.0.1"
  leaf "$dir/ca" "$dir/admin" "head office admin" "URI:urn:pos:admin:hq-ops"
  leaf "$dir/ca" "$dir/device-S001-D1" "S001 D1" "URI:urn:pos:store:S001:device:D1"
  leaf "$dir/ca" "$dir/expired" "S001 D9 expired" "URI:urn:pos:store:S001:device:D9" \
    20200101000000Z 20200201000000Z
  leaf "$dir/other-ca" "$dir/foreign" "S001 D1 from another CA" "URI:urn:pos:store:S001:device:D1"
  leaf "$dir/ca" "$dir/revoked" "S001 D7 revoked" "URI:urn:pos:store:S001:device:D7"
  openssl ca -batch -config "$dir/ca/ca.cnf" -revoke "$dir/revoked.crt" 2>/dev/null
  gencrl
  ;;
device)
  store=${3:?store id}
  device=${4:?device id}
  leaf "$dir/ca" "$dir/device-$store-$device" "$store $device" "URI:urn:pos:store:$store:device:$device"
  ;;
revoke)
  name=${3:?certificate name}
  openssl ca -batch -config "$dir/ca/ca.cnf" -revoke "$dir/$name.crt" 2>/dev/null
  gencrl
  ;;
crl-expired)
  out=${3:?output file}
  openssl ca -batch -config "$dir/ca/ca.cnf" -gencrl -crl_lastupdate 20200101000000Z \
    -crl_nextupdate 20200201000000Z -out "$out" 2>/dev/null
  ;;
crl-other)
  out=${3:?output file}
  openssl ca -batch -config "$dir/other-ca/ca.cnf" -gencrl -out "$out" 2>/dev/null
  ;;
*)
  echo "pki.sh: unknown command $cmd" >&2
  exit 2
  ;;
esac
