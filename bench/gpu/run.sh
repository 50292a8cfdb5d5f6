#!/usr/bin/env bash
# The trainer on one GPU in one prepared call (issue 31). On a lent GPU machine (its python3 has
# torch with CUDA and none of Ray, MLflow, DeepSpeed, webdataset; nothing can be fetched there):
#
#   bash bench/gpu/wheels.sh                   # here, once: the wheels, in chunks under .whl/ (ignored)
#   # device calls, back to back (the machine keeps what earlier calls left for 30 s):
#   #   carry [".whl/chunk-1"]  command: bash bench/gpu/run.sh --stage
#   #   ... one call per chunk but the last ...
#   #   carry [".whl/chunk-N"]  command: bash bench/gpu/run.sh            (figures in $OUT/gpu_run.json)
#
#   bash bench/gpu/run.sh --dry-run            # the same steps here, on the CPU, tiny sizes (a CI test)
#
# --stage only checks the chunk it was given arrived (each call carries one chunk, at most 64 MiB);
# the full run joins the chunks' parts (a wheel larger than a chunk travels in pieces), installs
# every wheel without an index into /tmp/site, and runs bench/gpu/run.py, which writes its figures
# as JSON to $OUT. Any other argument is passed to run.py (--steps, --batches, --timeout).
set -euo pipefail
cd "$(dirname "$0")/../.."

dry=0
stage=0
args=()
for a in "$@"; do
    case "$a" in
        --dry-run) dry=1; args+=("--dry-run") ;;
        --stage) stage=1 ;;
        *) args+=("$a") ;;
    esac
done

if [ "$stage" = 1 ]; then
    ls -d .whl/chunk-* >/dev/null 2>&1 || { echo "--stage: no .whl/chunk-* carried" >&2; exit 2; }
    du -sh .whl/chunk-*
    exit 0
fi

PY="${PYTHON:-python3}"
if [ "$dry" = 0 ]; then
    ls .whl/chunk-*/manifest.json >/dev/null 2>&1 || { echo "no .whl/chunk-*: run bench/gpu/wheels.sh here and carry the chunks" >&2; exit 2; }
    "$PY" bench/gpu/wheels.py join .whl
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/wheels/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="/tmp/site/bin:$PATH"
    "$PY" -c "import torch, ray, deepspeed, mlflow, webdataset; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__, 'deepspeed', deepspeed.__version__, 'mlflow', mlflow.__version__)"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$HOME/.cache/sensorlm/torch_extensions}"
exec "$PY" bench/gpu/run.py "${args[@]}"
