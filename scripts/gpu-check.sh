#!/usr/bin/env bash
# One prepared check of the WebGPU backend on a machine with a real GPU (written for an NVIDIA H200 through Dawn +
# Vulkan; no internet there: Node comes from .tools/, packages from node_modules/, both carried from here).
#
#   scripts/gpu-check.sh            # results under $OUT (default bench-results/gpu-check, git-ignored)
#
# Steps, each under its own timeout so the whole run stays within ~5 minutes:
#   1. environment: GPU (nvidia-smi), Vulkan loader and ICD, the WebGPU adapter Dawn picks, its limits/features and
#      the kernel tuning the backend chose for it;                                             (≤ 30 s)
#   2. correctness smoke: the WebGPU backend's kernel-by-kernel cross-check against the CPU backend, plus the
#      matmul-path and fused-attention tests (they run the GPU's own tuning: prefetch, unrolled loops);  (≤ 100 s)
#   3. bench:tensor --backends webgpu --json $OUT/bench-gpu.json (matmul GFLOP/s, Llama block step);  (≤ 130 s)
#   4. the one-time matmul micro-autotune (cache file under $OUT), then the matmul section again with
#      its choice → $OUT/bench-gpu-autotuned.json. Skip with GPU_CHECK_AUTOTUNE=0.             (≤ 50 s)
# Every step's output is also saved under $OUT (*.log). The exit status is that of the smoke test.
#
# Vulkan: if VK_DRIVER_FILES (or the older VK_ICD_FILENAMES) is set it is respected as is; otherwise, when an
# NVIDIA ICD manifest is found in the usual places, VK_DRIVER_FILES is pointed at it so that Dawn cannot pick a
# software rasterizer instead of the GPU.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/bench-results/gpu-check}"
mkdir -p "$OUT"
START=$(date +%s)
log() { printf '\n=== [%3ds] %s\n' "$(($(date +%s) - START))" "$*"; }

# Node and pnpm from .tools/ (env.sh only downloads when they are missing, which needs a network).
# shellcheck source=env.sh
. "$ROOT/scripts/env.sh" || { echo "gpu-check: no usable Node (expected .tools/node)"; exit 2; }
TSX="$ROOT/node_modules/.bin/tsx"
VITEST="$ROOT/node_modules/.bin/vitest"
for bin in "$TSX" "$VITEST"; do [ -x "$bin" ] || { echo "gpu-check: missing $bin (carry node_modules)"; exit 2; }; done

# ---- 1. environment ---------------------------------------------------------------------------------------------
log "environment"
echo "host: $(uname -srm), $(nproc) cpus, node $(node --version)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
else
  echo "nvidia-smi: not found"
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -z "${VK_ICD_FILENAMES:-}" ]; then
  for dir in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d /usr/lib/x86_64-linux-gnu/vulkan/icd.d; do
    for f in "$dir"/nvidia*.json; do
      if [ -f "$f" ]; then export VK_DRIVER_FILES="$f"; break 2; fi
    done
  done
fi
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-<unset>} VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-<unset>}"
(ldconfig -p 2>/dev/null | grep -E 'libvulkan\.so|libnvidia-glcore|libGLX_nvidia' | head -5) || true
ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null || true

# The adapter and the tuning, from the backend itself (a throwaway module under $OUT).
cat > "$OUT/adapter-info.mts" <<EOF
import { createWebGpuBackend } from "$ROOT/packages/core-tensor/src/backends/webgpu/webgpu-backend.ts"
const b = (await createWebGpuBackend({ powerPreference: "high-performance" })) as any
console.log("adapter:", JSON.stringify(b.adapter))
console.log("backend device:", b.info.device)
console.log("limits:", JSON.stringify({ ...b.info.limits, workgroupStorage: b.kernelContext.workgroupStorage, maxInvocations: b.kernelContext.maxInvocations }))
console.log("features:", b.info.features.join(" "))
console.log("tuning:", JSON.stringify(b.tuning))
b.destroy()
EOF
timeout 30 "$TSX" "$OUT/adapter-info.mts" 2>&1 | grep -v "artificially reduced" | tee "$OUT/adapter.log"

# ---- 2. correctness smoke ---------------------------------------------------------------------------------------
log "correctness: webgpu backend vs cpu backend, matmul paths, fused attention"
timeout 100 "$VITEST" run packages/core-tensor/test/webgpu-backend.test.ts packages/core-tensor/test/webgpu-matmul.test.ts \
  packages/core-tensor/test/webgpu-attention.test.ts 2>&1 | grep -v "artificially reduced" | tee "$OUT/smoke.log" | grep -E "✓|×|FAIL|Error|Tests|Test Files|matmul 512|Duration"
SMOKE=${PIPESTATUS[0]}
echo "smoke exit status: $SMOKE"

# ---- 3. benchmark -----------------------------------------------------------------------------------------------
log "bench:tensor --backends webgpu"
timeout 130 "$TSX" packages/core-tensor/bench/bench-tensor.ts --backends webgpu --peers none --budget 2 --max-runs 10 \
  --json "$OUT/bench-gpu.json" 2>&1 | grep -v "artificially reduced" | tee "$OUT/bench.log"
echo "bench exit status: ${PIPESTATUS[0]}"

# ---- 4. autotune ------------------------------------------------------------------------------------------------
if [ "${GPU_CHECK_AUTOTUNE:-1}" != "0" ]; then
  log "matmul autotune (cache: $OUT/webgpu-tuning.json), then the matmul section with its choice"
  export BDVAX_WEBGPU_TUNING_CACHE="$OUT/webgpu-tuning.json"
  BDVAX_WEBGPU_AUTOTUNE=1 timeout 50 "$TSX" packages/core-tensor/bench/bench-tensor.ts --backends webgpu --peers none \
    --sections matmul --budget 1 --max-runs 10 --json "$OUT/bench-gpu-autotuned.json" 2>&1 | grep -v "artificially reduced" | tee "$OUT/autotune.log"
  echo "autotune exit status: ${PIPESTATUS[0]}"
fi

log "done; results in $OUT"
ls -la "$OUT"
exit "$SMOKE"
