/*
 * identity.c - the caller's identity from its certificate's SAN URIs.
 *
 * mbedTLS 2.28 lists only dNSName and otherName entries in
 * crt->subject_alt_names, so the subjectAltName extension is walked here
 * with mbedTLS's own ASN.1 reader, picking the uniformResourceIdentifier
 * ([6] IA5String) entries.
 */
#include "server/identity.h"

#include <mbedtls/asn1.h>
#include <mbedtls/oid.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <string.h>

#define IDENTITY_STORE_PREFIX "urn:pos:store:"
#define IDENTITY_ADMIN_PREFIX "urn:pos:admin:"

/* See identity.h. */
int identity_id_valid(const char *id, size_t len)
{
  if (len == 0 || len > IDENTITY_ID_MAX)
    return 0;
  for (size_t i = 0; i < len; i++) {
    char c = id[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

int identity_from_uri(const char *uri, size_t uri_len, struct identity *identity, char *err,
                      size_t err_size)
{
  size_t store_prefix = strlen(IDENTITY_STORE_PREFIX);
  size_t admin_prefix = strlen(IDENTITY_ADMIN_PREFIX);

  memset(identity, 0, sizeof(*identity));
  if (uri_len > store_prefix && memcmp(uri, IDENTITY_STORE_PREFIX, store_prefix) == 0) {
    const char *store = uri + store_prefix;
    const char *end = uri + uri_len;
    const char *sep = memchr(store, ':', (size_t)(end - store));
    const char *device;
    if (!sep || (size_t)(end - sep) <= strlen(":device:") ||
        memcmp(sep, ":device:", strlen(":device:")) != 0)
      goto bad_device;
    device = sep + strlen(":device:");
    if (!identity_id_valid(store, (size_t)(sep - store)) ||
        !identity_id_valid(device, (size_t)(end - device)))
      goto bad_device;
    identity->kind = IDENTITY_DEVICE;
    memcpy(identity->store_id, store, (size_t)(sep - store));
    memcpy(identity->device_id, device, (size_t)(end - device));
    return 0;
  }
  if (uri_len > admin_prefix && memcmp(uri, IDENTITY_ADMIN_PREFIX, admin_prefix) == 0) {
    if (!identity_id_valid(uri + admin_prefix, uri_len - admin_prefix)) {
      snprintf(err, err_size, "admin SAN URI \"%.*s\" has an invalid name", (int)uri_len, uri);
      return -1;
    }
    identity->kind = IDENTITY_ADMIN;
    memcpy(identity->admin, uri + admin_prefix, uri_len - admin_prefix);
    return 0;
  }
  snprintf(err, err_size, "SAN URI \"%.*s\" is neither urn:pos:store:<store>:device:<device> "
           "nor urn:pos:admin:<name>", (int)(uri_len > 200 ? 200 : uri_len), uri);
  return -1;
bad_device:
  snprintf(err, err_size,
           "device SAN URI \"%.*s\" must be urn:pos:store:<store>:device:<device> with ids of "
           "1-64 characters [A-Za-z0-9._-]",
           (int)(uri_len > 200 ? 200 : uri_len), uri);
  return -1;
}

/* Finds the subjectAltName extension's value (the GeneralNames SEQUENCE). */
static int identity_find_san(const mbedtls_x509_crt *crt, unsigned char **san,
                             const unsigned char **san_end)
{
  unsigned char *p = crt->v3_ext.p;
  const unsigned char *end = p + crt->v3_ext.len;
  size_t len;

  if (!p || crt->v3_ext.len == 0)
    return -1;
  /* v3_ext may start at the [3] EXPLICIT wrapper or at its SEQUENCE. */
  if (*p == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 3) &&
      mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONTEXT_SPECIFIC |
                                              MBEDTLS_ASN1_CONSTRUCTED | 3) != 0)
    return -1;
  if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
    return -1;
  end = p + len;
  while (p < end) {
    const unsigned char *ext_end;
    mbedtls_x509_buf oid;
    int critical = 0; /* read past, not needed: we only look */
    if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
      return -1;
    ext_end = p + len;
    if (mbedtls_asn1_get_tag(&p, ext_end, &oid.len, MBEDTLS_ASN1_OID))
      return -1;
    oid.p = p;
    p += oid.len;
    /* The optional critical flag: absent leaves p where it was. */
    (void)mbedtls_asn1_get_bool(&p, ext_end, &critical);
    if (mbedtls_asn1_get_tag(&p, ext_end, &len, MBEDTLS_ASN1_OCTET_STRING))
      return -1;
    if (MBEDTLS_OID_CMP(MBEDTLS_OID_SUBJECT_ALT_NAME, &oid) == 0) {
      if (mbedtls_asn1_get_tag(&p, ext_end, &len,
                               MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
        return -1;
      *san = p;
      *san_end = p + len;
      return 0;
    }
    p = (unsigned char *)ext_end;
  }
  return -1;
}

int identity_from_cert(const mbedtls_x509_crt *crt, struct identity *identity, char *err,
                       size_t err_size)
{
  unsigned char *p;
  const unsigned char *end;
  int found = 0;

  if (!crt) {
    snprintf(err, err_size, "no client certificate: present the device or admin certificate");
    return -1;
  }
  if (identity_find_san(crt, &p, &end)) {
    snprintf(err, err_size, "the client certificate has no subjectAltName: it needs a SAN "
             "URI urn:pos:store:<store>:device:<device> or urn:pos:admin:<name>");
    return -1;
  }
  while (p < end) {
    unsigned char tag = *p;
    size_t len;
    p++;
    if (mbedtls_asn1_get_len(&p, end, &len)) {
      snprintf(err, err_size, "the client certificate's subjectAltName is malformed");
      return -1;
    }
    if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER) &&
        len >= 8 && memcmp(p, "urn:pos:", 8) == 0) {
      struct identity candidate;
      if (identity_from_uri((const char *)p, len, &candidate, err, err_size))
        return -1;
      if (found) {
        snprintf(err, err_size, "the client certificate has more than one urn:pos: SAN URI; "
                 "issue it with exactly one");
        return -1;
      }
      *identity = candidate;
      found = 1;
    }
    p += len;
  }
  if (!found) {
    snprintf(err, err_size, "the client certificate has no SAN URI urn:pos:store:<store>:"
             "device:<device> or urn:pos:admin:<name>");
    return -1;
  }
  return 0;
}

int64_t identity_cert_not_after_ms(const struct mbedtls_x509_crt *crt)
{
  const mbedtls_x509_time *t;
  int y, m;
  int64_t era, yoe, doy, days;

  if (!crt)
    return 0;
  t = &crt->valid_to;
  if (t->year < 1970 || t->mon < 1 || t->mon > 12)
    return 0;
  /* Days since 1970-01-01 (proleptic Gregorian; timegm is not C11). */
  y = t->year - (t->mon <= 2);
  m = t->mon;
  era = y / 400;
  yoe = y - era * 400;
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + t->day - 1;
  days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
  return ((days * 86400) + t->hour * 3600 + t->min * 60 + t->sec) * 1000;
}
