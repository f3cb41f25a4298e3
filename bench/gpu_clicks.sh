#!/usr/bin/env bash
# The click rows (10 to 14) with vit_h on a CUDA GPU, the server's encoder in bf16 (the decoder always runs
# in fp32, the stock predictor too): how long a click takes beyond the decoder there, at full size and at
# mask_scale 0.32. Builds vit_h with random weights first (no download). Under 8 minutes on one H100; it
# stops itself at 470 s. Prints the JSON, then one line per figure with the CPU's flags.
#     bench/gpu_clicks.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
preload_tcmalloc
.venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU here")'
exec timeout 470 .venv/bin/python -m bench.sitting --mode full --only clicks --model vit_h --precision bf16 --runs 20 "$@"
