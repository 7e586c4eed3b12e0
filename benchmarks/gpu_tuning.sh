#!/usr/bin/env bash
# The fine-tuning figures on a GPU in one prepared run: bf16, LoRA rank 128 (alpha
# 256, the paper's) on every linear layer of the language model plus the projector,
# on a random-init LLaVA-1.5-7B-sized model (CLIP ViT-L/14-336, 576 image tokens;
# 32-block Llama of width 4096; 32064-token vocabulary). Prints steps/s, samples/s
# and tokens/s of VLMClassificationTuner with and without gradient checkpointing
# against a bare transformers + peft loop (same model, batch and precision), then
# the peak GPU memory of the training steps with and without gradient
# checkpointing. About 9 minutes on one H100/H200-class GPU:
# building and saving the random model (14 GB in bf16) and three fresh processes
# for the memory part take most of it.
#
# Run from the repository root after `make install` (a CUDA build of torch); the
# output goes to $OUT (the device tool's folder) or ./gpu-figures. Copy the printed
# lines, with the machine line, into docs/benchmarks/tuning.rst.
set -euo pipefail
out="${OUT:-gpu-figures}"
mkdir -p "$out"
python="${PYTHON:-$PWD/.venv/bin/python}"
# the 14 GB random model: in RAM (/dev/shm) when it has room, else on disk
model_dir="${TMPDIR:-/tmp}"
if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt 20000000 ]; then
    model_dir=/dev/shm
fi
cd benchmarks
"$python" bench_tuning.py --size 7b --device cuda --dtype bfloat16 \
    --lora-rank 128 --batch-size 8 --steps 6 --repeats 2 --model-dir "$model_dir" \
    | tee "../$out/tuning_7b_cuda_bf16.txt"
