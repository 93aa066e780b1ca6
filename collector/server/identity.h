/*
 * identity.h - who is calling: the store and device, or the head-office
 * admin, taken from the verified client certificate's SAN URI
 * (urn:pos:store:<store_id>:device:<device_id> or urn:pos:admin:<name>),
 * never from the request body.
 */
#ifndef COLLECTOR_IDENTITY_H
#define COLLECTOR_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

struct mbedtls_x509_crt;

#define IDENTITY_ID_MAX 64

enum identity_kind { IDENTITY_DEVICE = 1, IDENTITY_ADMIN = 2 };

struct identity {
  enum identity_kind kind;
  char store_id[IDENTITY_ID_MAX + 1];  /* devices */
  char device_id[IDENTITY_ID_MAX + 1]; /* devices */
  char admin[IDENTITY_ID_MAX + 1];     /* admins */
};

/*
 * Reads the identity from `crt` (borrowed). Returns 0, or -1 with `err`
 * saying what the certificate lacks: no SAN URI of ours, two of them, or
 * ids that are empty, too long or hold characters outside [A-Za-z0-9._-].
 */
int identity_from_cert(const struct mbedtls_x509_crt *crt, struct identity *identity,
                       char *err, size_t err_size);

/* 1 if the `len` bytes at `id` are a store, device or admin name that the
 * SAN URI can carry: 1 to IDENTITY_ID_MAX of [A-Za-z0-9._-]. Every id the
 * collector takes from a request or a record is held to this one rule. */
int identity_id_valid(const char *id, size_t len);

/* Parses one SAN URI; same returns as identity_from_cert. */
int identity_from_uri(const char *uri, size_t uri_len, struct identity *identity, char *err,
                      size_t err_size);

/* The certificate's notAfter as UTC epoch ms, or 0 when `crt` is NULL. Any thread. */
int64_t identity_cert_not_after_ms(const struct mbedtls_x509_crt *crt);

#endif
