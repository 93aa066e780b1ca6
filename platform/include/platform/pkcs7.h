/*
 * pkcs7.h - the "certs-only" PKCS#7 of EST (RFC 7030 sections 4.1.3 and
 * 4.2.3): a degenerate CMS SignedData (RFC 5652) that carries certificates
 * and no signature. The collector answers /cacerts and /simpleenroll with
 * one; the agent reads the certificate out of one. mbedTLS 2.28 has no
 * PKCS#7, so this file writes and reads that one shape with mbedTLS's ASN.1
 * functions, and nothing more (no signed content, no signer infos).
 */
#ifndef PLATFORM_PKCS7_H
#define PLATFORM_PKCS7_H

#include <stddef.h>

#include <mbedtls/x509_crt.h>

/*
 * Writes the certificates of `chain` (in its order) as a certs-only
 * SignedData in DER. Returns 0 with *der (malloc'd, the caller frees) and
 * *len, or -1 with `err` saying why (an empty chain, out of memory).
 */
int pkcs7_certs_only_write(const mbedtls_x509_crt *chain, unsigned char **der, size_t *len,
                           char *err, size_t err_size);

/*
 * The same, as EST sends it: base64 of that DER, in lines of 64 characters
 * (a NUL-terminated string, malloc'd).
 */
int pkcs7_certs_only_write_base64(const mbedtls_x509_crt *chain, char **text, char *err,
                                  size_t err_size);

/*
 * Reads a certs-only SignedData from DER, or from base64 when `is_base64`
 * (whitespace and line breaks ignored, as EST servers send it), adding its
 * certificates to `chain` (initialised by the caller) in their order.
 * Returns the number of certificates added (at least 1), or -1 with `err`
 * saying what is wrong with the input.
 */
int pkcs7_certs_only_parse(const unsigned char *data, size_t len, int is_base64,
                           mbedtls_x509_crt *chain, char *err, size_t err_size);

/*
 * Decodes base64 as EST sends its bodies (RFC 7030 section 4: lines of any
 * length, spaces and line breaks between them ignored). Returns 0 with *der
 * (malloc'd, the caller frees) and *der_len, at least one byte; or -1 when
 * the text is not base64, decodes to nothing, or memory ran out.
 */
int pkcs7_base64_decode(const unsigned char *text, size_t len, unsigned char **der,
                        size_t *der_len);

#endif
