#!/usr/bin/env bash
# Encode on a GPU machine, one command, at most 8 minutes: see benchmarks/gpu.py.
#   bash benchmarks/gpu.sh [--images 3000] [--json-out gpu.json]
#   bash benchmarks/gpu.sh --dry-run      # the same script, tiny, on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 480 python benchmarks/gpu.py "$@"
