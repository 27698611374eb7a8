#!/usr/bin/env bash
# personalisation gain on an unseen subject: fine-tune the outer fold's pre-training on the other five
# subjects (the nested run's checkpoint), export, score the head on the held-out subject.
set -euo pipefail
t=$1; shift
train=$(echo p1 p2 p3 p4 p5 p6 | tr ' ' '\n' | grep -v "^$t$" | paste -sd,)
# NESTED (default training/runs/nested: 2.4.0's hop-100 pre-training; training/runs/dense/nested: 2.5.0's),
# RECIPE (crossl_finetune or crossl_nomag25) and OUT (default training/runs/personalise-loso) choose the recipe.
ckpt=${NESTED:-training/runs/nested}/nested_$t/pretrain_$(echo $train | tr ',' '_').pt
out=${OUT:-training/runs/personalise-loso}/$t
mkdir -p $out
.venv/bin/python -m crossl finetune --threads 1 --coverage 0.5 --subjects $train --pretrained $ckpt \
    --recipe ${RECIPE:-crossl_finetune} --out $out/finetuned.pt
.venv/bin/python -m crossl export --checkpoint $out/finetuned.pt --out $out/model --version fold-$t
.venv/bin/python training/experiments/personalise.py --model $out/model --subjects $t --held-out --out $out
.venv/bin/python training/experiments/personalise.py --model $out/model --subjects $t --held-out --combine product --out $out
for sensors in no_mag acc_only; do  # a device without some sensor types, absent when labelling and after
    for combine in replace product; do
        .venv/bin/python training/experiments/personalise.py --model $out/model --subjects $t --held-out --combine $combine --sensors $sensors --out $out
    done
done
for unit in torso right_arm left_arm right_leg left_leg; do  # a device without one body unit (default rule only)
    .venv/bin/python training/experiments/personalise.py --model $out/model --subjects $t --held-out --sensors no_$unit --out $out
done
