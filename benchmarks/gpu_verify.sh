#!/usr/bin/env bash
# Everything issue "CuPy GPU backend end to end" asks to run on a real GPU, in one go:
#   1. the whole test suite (the CUDA cases run instead of skipping),
#   2. the DenseNet-BC L=100 k=12 batch-64 step on the GPU against PyTorch + cuDNN,
#   3. a short training run on the CIFAR-10 subset with --device cuda.
# Run from the repository root on a machine with an NVIDIA GPU and CuPy installed,
# with TINYDENSE_DATA pointing at the directory holding cifar-10-batches-py/.
set -uo pipefail
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
python -c "import tinydense, sys; sys.exit(0 if tinydense.cuda.is_available() else 'CUDA not available')" || exit 1
export MPLBACKEND=Agg TINYDENSE_LESSONS_FAST=1
python -m pytest -q -rs 2>&1 | tee "$out/gpu_pytest.log"
python benchmarks/bench_gpu.py 2>&1 | tee "$out/gpu_bench.log"
python -m tinydense train --model densenet-bc --depth 40 --growth-rate 12 --epochs 3 --device cuda \
    --data-dir "${TINYDENSE_DATA:?set TINYDENSE_DATA}" --out "$out/gpu_run" --no-progress 2>&1 | tee "$out/gpu_train.log"
