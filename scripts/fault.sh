#!/usr/bin/env bash
# The fault harness, built and run: one table, one row per fault, each row
# counting sales acknowledged to the POS against records in Kafka (lost,
# doubled). See tests/fault/run.sh for the scenarios and the columns.
#
#   bash scripts/fault.sh                  the short version (as ctest's fault_short)
#   bash scripts/fault.sh --long           every scenario, long (about 15-20 min)
#   bash scripts/fault.sh --long --only kill_storm,power_loss
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build
cmake --build build -j"$(nproc)"
exec bash tests/fault/run.sh "$@" build
