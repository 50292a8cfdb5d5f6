#!/usr/bin/env bash
# The wheels the GPU machine lacks, for bench/gpu/run.sh, in chunks under .whl/ (git-ignored), each
# small enough for one device call (64 MiB with the working tree). Run here, from the repository's
# virtual environment (its versions are the ones carried), with PyPI reachable:
#
#   bash bench/gpu/wheels.sh            # then carry .whl/chunk-1 ... .whl/chunk-N, one per call
#
# See bench/gpu/wheels.py for what is carried and why.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
"$PY" bench/gpu/wheels.py download .whl
ls -d .whl/chunk-* | sed 's/^/carry: /'
