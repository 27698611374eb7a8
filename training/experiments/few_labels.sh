#!/usr/bin/env bash
# CroSSL fine-tune vs supervised from scratch at 1 % and 5 % labels, LOSO over p1..p6, seeds 0..4 (or "$@").
# Each fold starts from the nested run's outer-fold pre-training (pre-trained here when missing); the seed
# varies the label subset, the classifier's initialisation and its batch order, for CroSSL and supervised alike.
# The recipe comes from the environment (defaults: 2.4.0's):
#   RECIPE   crossl_finetune (2.4.0) or crossl_nomag25 (2.5.0)
#   RUN_DIR  training/runs (2.4.0's hop-100 nested pre-training) or training/runs/dense (2.5.0's)
#   PRETRAIN "--hop 100 --pretrain-epochs 10"-style flags matching RUN_DIR's pre-training (2.5.0: --hop 25 --pretrain-epochs 8)
#   OUT      where the per-seed results and the table go (default training/runs/fewlabel)
#   BASELINE a finished OUT whose supervised results to reuse (then supervised is not trained again)
set -euo pipefail
seeds=${*:-0 1 2 3 4}
recipe=${RECIPE:-crossl_finetune}
run_dir=${RUN_DIR:-training/runs}
out=${OUT:-training/runs/fewlabel}
methods=$recipe,supervised
[ -n "${BASELINE:-}" ] && methods=$recipe
for s in $seeds; do
  # shellcheck disable=SC2086
  .venv/bin/python -m crossl evaluate --threads 1 --coverage 0.5 ${PRETRAIN:-} --folds p1,p2,p3,p4,p5,p6 \
    --methods "$methods" --label-percents 1,5 --nested-pretraining --run-dir "$run_dir" \
    --finetune-seed "$s" --out "$out/seed$s"
done
dirs=$(for s in $seeds; do printf '%s ' "$out/seed$s"; done)
baseline_dirs=$(for s in $seeds; do printf '%s ' "${BASELINE:-$out}/seed$s"; done)
# shellcheck disable=SC2086
.venv/bin/python -m crossl seeds --results $dirs --method "$recipe" --baseline supervised \
    --baseline-results $baseline_dirs --out "$out/crossl_vs_supervised.md"
