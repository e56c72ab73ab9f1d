#!/usr/bin/env bash
# The suites that need Python (torch 2.13.0, transformers, peft, gguf): regenerate-and-compare the committed
# parity fixtures, then the live round trips (bdvax writes, transformers/peft read) and the SmolLM2 GGUF checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-python.sh
.venv/bin/pip install -q -r tests/parity/requirements.txt
echo "== llm parity fixtures: drift check"
.venv/bin/python tests/parity/make_llm_fixtures.py --check
echo "== live round trips and SmolLM2"
exec pnpm exec vitest run --config vitest.parity.config.ts "$@"
