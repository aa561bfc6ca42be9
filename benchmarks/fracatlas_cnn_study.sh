#!/bin/sh
# Can a CNN trained on this CPU see fractures? MobileNetV3-Small with and without CBAM, from scratch on
# FracAtlas, scored on its test split beside the shortcut baselines, per body region, and with the
# Grad-CAM box hit rate. About 1 hour of training on 2 CPU cores (15 epochs at 224 px per run).
#
#   TF_FRACTURE_FRACATLAS=../shared/fracatlas/FracAtlas sh benchmarks/fracatlas_cnn_study.sh [RUNS_DIR]
#
# Writes RUNS_DIR (default runs/fracatlas-study): one run folder per model (evaluation/ and explain/
# inside), ablation/ (the side-by-side comparison) and baselines.md (the table in the README).
set -eu
: "${TF_FRACTURE_FRACATLAS:?set TF_FRACTURE_FRACATLAS to the extracted FracAtlas/ folder}"
PY="${PYTHON:-.venv/bin/python}"
RUNS="${1:-runs/fracatlas-study}"
COMMON="--preset demo --dataset fracatlas --set data.manual_dir=$TF_FRACTURE_FRACATLAS --set data.image_size=224
  --set train.epochs=15 --set train.class_weights=balanced --set train.learning_rate=1e-3 --no-evaluate"

$PY -m tf_fracture.train $COMMON --run-dir "$RUNS/cbam"
$PY -m tf_fracture.train $COMMON --set model.attention=false --run-dir "$RUNS/no-cbam"
for run in "$RUNS/cbam" "$RUNS/no-cbam"; do
  $PY -m tf_fracture.evaluate "$run" --split test
  $PY -m tf_fracture.evaluate "$run" --split validation --allow-same-split  # scores for the baselines' table
  $PY -m tf_fracture.explain "$run" --dataset fracatlas --split test --limit 70
done
$PY -m tf_fracture.evaluate "$RUNS/cbam" "$RUNS/no-cbam" --split test --out "$RUNS/ablation"
$PY benchmarks/fracatlas_baselines.py --scores "MobileNetV3-S + CBAM=$RUNS/cbam" \
  --scores "MobileNetV3-S=$RUNS/no-cbam" --json "$RUNS/baselines.json" | tee "$RUNS/baselines.md"
