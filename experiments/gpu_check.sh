#!/usr/bin/env bash
# One call on a GPU machine (PyTorch, PyG and transformers preinstalled, no registry):
# the GPU-marked tests, then the speed benchmark on Gowalla on CUDA, a short table last.
#   bash experiments/gpu_check.sh [GOWALLA_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
# Run from the source tree: graphrec from ., and the cli/ folder under the name it installs as
# (graphrec_cli), through a link in a temporary folder.
shim=$(mktemp -d) && ln -s "$PWD/cli" "$shim/graphrec_cli" && trap 'rm -rf "$shim"' EXIT
export PYTHONPATH=".:$shim"
data=${1:-${GRAPHREC_GOWALLA:-../shared/datasets/gowalla}}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -5
python experiments/bench_speed.py --data "$data" --device cuda 2>&1 | tail -12
python experiments/gowalla_quality.py --data "$data" --device cuda --minutes 8 --eval-every 5 2>&1 | tail -12
