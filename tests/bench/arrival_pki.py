#!/usr/bin/env python3
"""arrival_pki.py - device certificates for many stores at once, for
arrival_bench.sh: running tests/tools/pki.sh 10,000 times is too slow.

    python3 arrival_pki.py PKI_DIR COUNT OUT_DIR

PKI_DIR is one made by `pki.sh init` (its CA in PKI_DIR/ca/ca.{crt,key}).
Writes OUT_DIR/S00001.crt and .key ... one per store, store i (1-based)
named S%05d, device D1, with the profile pki.sh's `device` gives: CN
"<store> <device>", SAN URI urn:pos:store:<store>:device:<device>, EC P-256,
basicConstraints critical CA:false, keyUsage critical digitalSignature,
extendedKeyUsage clientAuth+serverAuth, 30 days, signed sha256 by the CA.

Requires python3-cryptography (Debian: apt-get install -y python3-cryptography).
"""
import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: arrival_pki.py PKI_DIR COUNT OUT_DIR")
    pki_dir, count, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(os.path.join(pki_dir, "ca", "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    with open(os.path.join(pki_dir, "ca", "ca.crt"), "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    os.makedirs(out_dir, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=30)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                 ExtendedKeyUsageOID.SERVER_AUTH])
    for i in range(1, count + 1):
        store, device = "S%05d" % i, "D1"
        key = ec.generate_private_key(ec.SECP256R1())
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
            "urn:pos:store:%s:device:%s" % (store, device))])
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                            "%s %s" % (store, device))]))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(usage, critical=True)
                .add_extension(eku, critical=False)
                .add_extension(san, critical=False)
                .sign(ca_key, hashes.SHA256()))
        base = os.path.join(out_dir, store)
        with open(base + ".crt", "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(base + ".key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))


if __name__ == "__main__":
    main()
