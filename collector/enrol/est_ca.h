/*
 * est_ca.h - the collector's issuing CA for EST enrolment (RFC 7030): it
 * turns a device's PKCS#10 request into the device's certificate, naming
 * the store and device that head office's one-time token was issued for
 * (urn:pos:store:<store>:device:<device>), never what the request asks.
 * The request only proves that the device holds the key (its signature is
 * checked); its subject and extensions are ignored.
 */
#ifndef COLLECTOR_ENROL_EST_CA_H
#define COLLECTOR_ENROL_EST_CA_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/x509_crt.h>

typedef struct est_ca est_ca;

/*
 * Loads the issuing CA's certificate (PEM, its chain after it) and key.
 * Returns the CA, or NULL with `err` naming the file and what is wrong
 * (unreadable, not a CA, not allowed to sign certificates, key not its).
 */
est_ca *est_ca_load(const char *cert_file, const char *key_file, char *err, size_t err_size);

void est_ca_free(est_ca *ca);

/* The CA's chain (its certificate first), for /cacerts. */
const mbedtls_x509_crt *est_ca_chain(const est_ca *ca);

/*
 * Issues a device certificate for the PKCS#10 request `csr` (DER) of the
 * device `device_id` of store `store_id`: valid from 5 minutes (a tenth
 * of a shorter lifetime) before `now_s`, for a device clock slightly
 * behind, until `lifetime_s` seconds after `now_s`, and
 * never past the CA's own expiry; client authentication only. Returns 0
 * with *der (malloc'd) and *der_len, or -1 with `err` saying what is wrong
 * with the request (unparsable, its signature does not match its key, a
 * key type or size refused) or that signing failed.
 */
int est_ca_issue(est_ca *ca, const unsigned char *csr, size_t csr_len, const char *store_id,
                 const char *device_id, int64_t now_s, int64_t lifetime_s, unsigned char **der,
                 size_t *der_len, char *err, size_t err_size);

#endif
