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
# Scale on one GPU: the step and epoch of a 100M-interaction synthetic power-law graph
# (about 34 GB of device memory by docs/SCALING.md's model), graphrec's defaults.
python experiments/bench_scaling.py --device cuda --fractions --synthetic 100000000 --steps 4 \
  --neg-candidates 8 2>&1 | tail -6
# Serving on CUDA: scoring without HTTP (CPU exact / ANN against CUDA exact, 1M items), then
# the HTTP benchmark with scores on the GPU when the serve extra is there (FastAPI, uvicorn).
python experiments/bench_scoring.py --items 1000000 --seconds 3 --threads 4 2>&1 | tail -10
if python -c "import fastapi, uvicorn, httpx, cachetools, prometheus_client" 2>/dev/null; then
  python experiments/bench_serve.py --seconds 20 --concurrency 8 --variants naive batched \
    --server-args="--score-device cuda" 2>&1 | tail -12
else
  echo "bench_serve.py skipped: the serve extra (fastapi, uvicorn, httpx, ...) is not installed"
fi
