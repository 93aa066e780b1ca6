/*
 * enrol_int.h - shared between the files of agent/enrol/ only.
 */
#ifndef AGENT_ENROL_INT_H
#define AGENT_ENROL_INT_H

#include <mbedtls/pk.h>

/* Whether `a` and `b` hold the same public key (their DER compared). */
int enrol__same_pubkey(mbedtls_pk_context *a, mbedtls_pk_context *b);

#endif
