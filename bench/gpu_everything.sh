#!/usr/bin/env bash
# The segment-everything rows (16 to 19) with vit_h on a CUDA GPU: CAP's server (its encoder in fp32, as the
# reference's) against SamAutomaticMaskGenerator.generate on the same weights, 640×480 and 4000×3000, the
# default parameters and the thresholds at 0. Builds vit_h with random weights first (no download). Under
# 8 minutes on one H100; it stops itself at 470 s. Prints the table.
#     bench/gpu_everything.sh [--size WIDTHxHEIGHT ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
preload_tcmalloc
.venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU here")'
exec timeout 470 .venv/bin/python -m bench.sitting --mode full --only everything --model vit_h "$@"
