#!/usr/bin/env bash
# Downloads, into .wheels/ (git-ignored), the wheels a lent GPU machine's image lacks for the benchmarks:
# its python3 (3.12) has torch, torchvision, numpy, numba, pyarrow, pillow, fsspec and matplotlib, and nothing can
# be fetched there. Carry the folder: run(command="bash bench/gpu_run.sh", carry=[".wheels"]).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .wheels && mkdir -p .wheels
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --implementation cp --abi cp312 --dest .wheels \
    "pycocotools>=2.0.8" "deflate>=0.7" "zlib-ng>=0.5" "transformers==5.23.0"
ls -l .wheels
du -sh .wheels
