#!/usr/bin/env bash
# GPU smoke run of the whole chain (see scripts/gpu_smoke.py); --dry-run runs it on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || make install
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python scripts/gpu_smoke.py "$@"
