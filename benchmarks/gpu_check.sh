#!/usr/bin/env bash
# The GPU figures in one prepared run, for a session that has a device machine:
# bf16 throughput of skvlm vs a bare HF loop (vision tower), then skvlm's images/s
# with preprocessing workers against forward-only throughput for ViT-L/14-336- and
# LLaVA-1.5-7B-sized models (about 4 minutes in all on an H100/H200-class GPU).
# Run from the repository root after `make install`; the output goes to $OUT (the
# device tool's folder) or ./gpu-figures. Copy the printed ratios, with the machine
# line, into docs/benchmarks/embedding.rst and preprocessing.rst.
#
# Two more prepared runs, each a command of its own (each near the 10-minute limit
# of one device command, so they are not chained here):
#   bash benchmarks/gpu_tuning.sh       fine-tuning steps/s vs bare peft, peak memory
#                                       (about 8 minutes; docs/benchmarks/tuning.rst)
#   bash scripts/paper_table_gpu.sh     the paper's table on a Caltech101-sized slice
set -euo pipefail
out="${OUT:-gpu-figures}"
mkdir -p "$out"
cd benchmarks
../.venv/bin/python bench_embedding.py --device cuda --dtype bfloat16 \
    --n-images 1024 --batch-size 64 --repeats 3 | tee "../$out/embedding_cuda_bf16.txt"
../.venv/bin/python bench_embedding.py --device cuda --dtype float32 \
    --n-images 1024 --batch-size 64 --repeats 3 | tee "../$out/embedding_cuda_fp32.txt"
# Paper scale: skvlm's images/s with preprocessing workers against forward-only
# throughput on pre-made tensors, ViT-L/14-336 and LLaVA-1.5-7B sizes (bf16).
../.venv/bin/python bench_preprocessing.py --gpu --n-images 512 --batch-size 32 \
    --repeats 3 | tee "../$out/preprocessing_cuda_bf16.txt"
