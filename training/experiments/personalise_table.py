"""The model card's personalisation tables from personalise_loso.sh's per-fold files (personalise_fold-pN*.md):
per held-out subject the general model's macro-F1 and the personal head's at k = 1, 2, 5, for each
combine rule and sensor set, with the mean gain; and, for a device without one body unit (replace rule), the
mean over the five units and the unit the general model serves worst.

    python training/experiments/personalise_table.py models/crossl-dsads/eval/personalise
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SETS = [("all", "all 15 modalities"), ("no_mag", "no magnetometers"), ("acc_only", "accelerometers only")]
UNITS = ["torso", "right_arm", "left_arm", "right_leg", "left_leg"]


def rows(folder: Path) -> dict[tuple[str, str, str], list[float]]:
    """(sensors, combine, subject) -> [general, k=1, k=2, k=5]."""
    out = {}
    for f in sorted(folder.glob("personalise_fold-p*.md")):
        m = re.fullmatch(r"personalise_fold-(p\d+)(?:_(product))?(?:_(no_mag|acc_only|no_(?:" + "|".join(UNITS) + ")))?\.md", f.name)
        if not m:
            continue
        subject, combine, sensors = m.group(1), m.group(2) or "replace", m.group(3) or "all"
        for line in f.read_text().splitlines():
            if line.startswith(f"| {subject} |"):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                out[(sensors, combine, subject)] = [float(c) for c in cells[1:5]]
    return out


def table(r: dict) -> str:
    subjects = sorted({s for (_, _, s) in r}, key=lambda s: int(s[1:]))
    lines = []
    for sensors, title in SETS:
        lines += [
            f"**{title}** (replace = the service's default; product = `--personal-combine product`)",
            "",
            "| held-out | general | k = 1 | k = 2 | k = 5 | k = 1, product | k = 2, product | k = 5, product |",
            "|---|---|---|---|---|---|---|---|",
        ]
        gains = {c: [[], [], []] for c in ("replace", "product")}
        generals = []
        for s in subjects:
            rep, prod = r.get((sensors, "replace", s)), r.get((sensors, "product", s))
            if not rep or not prod:
                continue
            g = rep[0]
            generals.append(g)
            cells = []
            for combine, vals in (("replace", rep), ("product", prod)):
                for i, v in enumerate(vals[1:]):
                    gains[combine][i].append(v - g)
                    cells.append(f"{v:.3f} ({v - g:+.3f})")
            lines.append(f"| {s} | {g:.3f} | " + " | ".join(cells) + " |")
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        lines.append(
            f"| mean ({len(generals)}) | {mean(generals):.3f} | "
            + " | ".join(f"{mean(gains[c][i]):+.3f}" for c in ("replace", "product") for i in range(3))
            + " |"
        )
        lines.append("")
    return "\n".join(lines) + unit_table(r, subjects)


def unit_table(r: dict, subjects: list[str]) -> str:
    """A device without one body unit: per held-out subject, the mean over the five units (general, then the
    head at k = 1, 2, 5 with its gain) and the unit whose absence hurts the general model most."""
    lines = [
        "**one body unit missing** (replace; mean over the five units, then the unit the general model serves worst)",
        "",
        "| held-out | general | k = 1 | k = 2 | k = 5 | worst unit | its general | its k = 5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    means = []
    for s in subjects:
        per_unit = {u: r[(f"no_{u}", "replace", s)] for u in UNITS if (f"no_{u}", "replace", s) in r}
        if len(per_unit) < len(UNITS):
            continue
        m = [sum(v[i] for v in per_unit.values()) / len(UNITS) for i in range(4)]
        worst = min(per_unit, key=lambda u: per_unit[u][0])
        w = per_unit[worst]
        means.append(m)
        lines.append(
            f"| {s} | {m[0]:.3f} | " + " | ".join(f"{v:.3f} ({v - m[0]:+.3f})" for v in m[1:])
            + f" | {worst} | {w[0]:.3f} | {w[3]:.3f} ({w[3] - w[0]:+.3f}) |"
        )
    if not means:
        return ""
    g = sum(m[0] for m in means) / len(means)
    lines.append(
        f"| mean ({len(means)}) | {g:.3f} | "
        + " | ".join(f"{sum(m[i] for m in means) / len(means) - g:+.3f}" for i in (1, 2, 3))
        + " | | | |"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(rows(Path(sys.argv[1]))))
