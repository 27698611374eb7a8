#!/usr/bin/env bash
# CroSSL fine-tune vs supervised from scratch at 1 % and 5 % labels, LOSO over p1..p6, seeds 0..4 (or "$@"),
# with the shipped recipe (coverage 0.5). Each fold starts from the nested run's outer-fold pre-training
# (`python -m crossl nested ... --run-dir training/runs`; pre-trained here when missing); the seed varies the
# label subset, the classifier's initialisation and its batch order, for CroSSL and supervised alike.
set -euo pipefail
seeds=${*:-0 1 2 3 4}
out=training/runs/fewlabel
for s in $seeds; do
  .venv/bin/python -m crossl evaluate --threads 1 --coverage 0.5 --folds p1,p2,p3,p4,p5,p6 \
    --methods crossl_finetune,supervised --label-percents 1,5 --nested-pretraining --run-dir training/runs \
    --finetune-seed "$s" --out "$out/seed$s"
done
dirs=$(for s in $seeds; do printf '%s ' "$out/seed$s"; done)
# shellcheck disable=SC2086
.venv/bin/python -m crossl seeds --results $dirs --out "$out/crossl_vs_supervised.md"
