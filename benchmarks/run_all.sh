#!/usr/bin/env bash
# Every scenario behind the table in benchmarks/README.md; results land in benchmarks/results/*.json.
# Each scenario starts its own brokers (data on disk in a temp dir) and takes a few minutes on 2 cores.
# REPEAT: runs against each broker (alternating with the blackhole ceiling); medians and spreads reported.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
REPEAT=${REPEAT:-5}
$PY benchmarks/produce_consume.py --client confluent --repeat "$REPEAT" --quiet
$PY benchmarks/produce_consume.py --client kafkite --repeat "$REPEAT" --quiet
$PY benchmarks/small_messages.py --repeat "$REPEAT" --quiet
$PY benchmarks/e2e_latency.py --repeat "$REPEAT" --duration 20 --quiet
$PY benchmarks/scale.py --partitions 5000 --connections 1000 --quiet
$PY benchmarks/scale.py --partitions 10000 --connections 1000 --quiet || echo "scale: 10,000 partitions failed (see results/scale-10000p.json)"
