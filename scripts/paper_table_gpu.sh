#!/usr/bin/env bash
# One-shot GPU run of scripts/paper_table.py on a Caltech101-sized slice.
#
#   bash scripts/paper_table_gpu.sh                 # writes under ${OUT:-paper-gpu}
#
# With local copies (nothing is downloaded):
#   DATA=/data/VLMClassifier/data            caltech.jsonl + caltech_classes.json,
#                                            or torchvision's caltech101/ folder
#   LLAVA=/models/llava-1.5-7b-hf  CLIP=/models/clip-vit-large-patch14-336
#   BLIP2=/models/blip2-opt-2.7b             (optional)
# it runs every row of the paper's table on Caltech101 (the paper's split; at most
# MAX_IMAGES images per split, default 3000, drawn per class in proportion so every
# class stays; under PROTOCOL=paper, sound or both, the default), with the
# fine-tuning row (VLMClassificationTuner.paper_preset) when TUNE=1. Without them it builds a synthetic layout of the same size (101 classes,
# 8,677 images: the embedded digits rendered with augmentation, class names
# "digit 0 variant 17"...) and runs the shipped tiny models on the GPU, which checks
# the whole path (store, resumption, bf16, batching) and times it at that scale.
# A second call resumes: finished rows and answers are kept in $OUT.
# DEVICE=cpu DTYPE=float32 MAX_IMAGES=20 checks the script without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-paper-gpu}
MAX_IMAGES=${MAX_IMAGES:-3000}
PY=${PY:-python}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" \
    || echo "no nvidia-smi (DEVICE=${DEVICE:-cuda})"

if [[ -n "${DATA:-}" && -n "${LLAVA:-}" && -n "${CLIP:-}" ]]; then
    args=(--data "$DATA" --llava "$LLAVA" --clip "$CLIP")
    [[ -n "${BLIP2:-}" ]] && args+=(--blip2 "$BLIP2")
    [[ "${TUNE:-0}" == 1 ]] && args+=(--tune)
    batch=16
else
    echo "no DATA/LLAVA/CLIP given: synthetic Caltech101-sized layout, tiny models"
    DATA="$OUT/synthetic"
    $PY - "$DATA" <<'EOF'
import json, sys
from pathlib import Path
from skvlm.datasets import load_digit_images

root = Path(sys.argv[1]); (root / "images").mkdir(parents=True, exist_ok=True)
classes = [f"digit {d} variant {v}" for d in range(10) for v in range(11)][:101]
rows = []
for copy in range(5):  # 5 renderings of the 1797 digits = 8985 images
    digits = load_digit_images(variation=0.5, random_state=copy)
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if len(rows) == 8677:  # Caltech101's image count
            break
        name = classes[(label * 11 + i % 11) % 101]
        path = root / "images" / f"{copy}_{i}.png"
        if not path.exists():
            image.save(path)
        rows.append({"image": str(path), "label": name,
                     "split": "train" if i % 3 else "test"})
(root / "caltech.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
(root / "caltech_classes.json").write_text(json.dumps(classes))
print(len(rows), "images,", len(classes), "classes")
EOF
    args=(--data "$DATA" --llava skvlm/tiny-llava --clip skvlm/tiny-clip
          --tuned skvlm/tiny-llava)
    batch=64
fi

start=$(date +%s)
$PY scripts/paper_table.py "${args[@]}" --datasets caltech --out "$OUT" \
    --max-images "$MAX_IMAGES" --device "${DEVICE:-cuda}" --dtype "${DTYPE:-bfloat16}" \
    --batch-size "$batch" --protocol "${PROTOCOL:-both}" \
    2>&1 | tee "$OUT/log.txt"
echo "wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/log.txt"
nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee -a "$OUT/log.txt" || true
