/*
 * sale_example.h - the POS contract's example sale (ARCHITECTURE.md), as
 * the agent's unit tests start from it: 2 x 12.50 - 1.00 + 2.30 = 26.30,
 * paid by card. Tests break one thing in it at a time.
 */
#ifndef TESTS_SALE_EXAMPLE_H
#define TESTS_SALE_EXAMPLE_H

#define SALE_EXAMPLE_JSON                                                                  \
  "{\"sale_id\": \"T1-000123\", \"kind\": \"sale\", \"terminal_id\": \"T1\","                 \
  " \"cashier_id\": \"E042\", \"channel\": \"pos\","                                          \
  " \"business_time\": \"2026-11-21T18:42:05+01:00\", \"currency\": \"EUR\","                 \
  " \"lines\": [{\"sku\": \"PIZZA-MARG-L\", \"qty\": 2, \"unit_price\": \"12.50\","           \
  " \"discount\": \"1.00\", \"promo_id\": \"TPR-42\", \"tax\": \"2.30\"}],"                   \
  " \"payments\": [{\"method\": \"card\", \"amount\": \"26.30\"}],"                           \
  " \"total\": \"26.30\"}"

#endif
