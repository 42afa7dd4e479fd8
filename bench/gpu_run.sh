#!/usr/bin/env bash
# Issue 7's GPU measurements, on a lent GPU machine, in the repository root (see docs/benchmarks.md, "GPU runs"):
#   bash bench/gpu_wheels.sh                      # here, once: the wheels the machine's image lacks
#   run(command="bash bench/gpu_run.sh [quick|ratio|stages|host]", carry=[".wheels"], timeout_s=600)
# Each part fits one 10-minute call; results go to $OUT (the device tool brings them back) or bench/out/gpu.
set -euo pipefail
part=${1:-quick}
out=${OUT:-bench/out/gpu}
mkdir -p "$out"
deps=/tmp/segcore-deps
if [ ! -d "$deps" ]; then
    python3 -m pip install --quiet --no-deps --no-index --target "$deps" .wheels/*.whl
fi
export PYTHONPATH="$PWD:$deps" RAY_AUTH_MODE=disabled
py=python3
log() { echo "== $(date -u +%H:%M:%S) $*"; }
case "$part" in
quick)  # environment, the GPU paths of the unit tests, one short ratio
    nvidia-smi | tee "$out/nvidia-smi.txt"
    $py -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
    log "tests on the GPU"
    $py -m pytest -q -p no:cacheprovider tests/models/test_base.py 2>&1 | tail -3
    log "pipeline ratio, demo"
    $py bench/pipeline_ratio.py --device cuda --model demo --images 64 --batch 8 --repeats 3 \
        --json "$out/pipeline_ratio_demo.json"
    ;;
ratio)  # goal 1: the published architectures, bf16, 640x480 JPEGs
    for model in eomt-large-640 mask2former-swin-large; do
        log "pipeline ratio, $model"
        $py bench/pipeline_ratio.py --device cuda --dtype bfloat16 --model "$model" --images 128 --batch 8 \
            --repeats 3 --json "$out/pipeline_ratio_$model.json"
    done
    ;;
stages)  # pre-processing, forward, post-processing per model on the GPU; each family's post-processing (issue 14)
    $py bench/models.py --models demo,eomt-large-640,mask2former-swin-large --images 16 --batch 8 \
        --device cuda --dtype bfloat16 --out "$out/models_cuda.json"
    $py bench/postprocess.py --device cuda --kept 30 all --repeats 5 --json "$out/postprocess_cuda.json"
    ;;
host)  # the host side on this machine's cores, device stood in: goal 1's host half, goal 4, goal 3 (actors)
    $py bench/device_overlap.py --repeats 2 --shard-images 512 --device-ms 2 4 8 --json "$out/device_overlap.json"
    $py bench/actor_scaling.py --actors 1 2 4 8 --device-ms 4 --repeats 2 --json "$out/actor_scaling_4ms.json"
    ;;
*)
    echo "Expected a part among quick, ratio, stages, host, but got '$part'" >&2
    exit 2
    ;;
esac
log "done: $part"
