"""Would successive halving have chosen what the full grid chose? Replayed on committed tunes, no refits.

scikit-learn's ``HalvingGridSearchCV`` idea, with folds as the resource: score every candidate on the
first ``r`` folds only, keep the best ``max(2, ceil(n × keep))`` of them by their mean there (ties: the
grid's order), score those on every fold, choose the best mean over all folds. Every
``docs/tuning/**/*candidates.csv`` holds each candidate's score on every fold, so the rule can be
replayed exactly as if it had run: this prints, for each committed tune, the full grid's choice and,
for each (r, keep), whether halving chooses the same (``=``) or what it would choose instead.

    python scripts/halving_replay.py                       # every committed tune
    python scripts/halving_replay.py docs/tuning/mtd/candidates.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from pathlib import Path

import numpy as np

#: The default grid's order of stage sets (ties are broken by the grid's order, as ``tune`` does).
STAGE_ORDER = ["layer2+3", "layer3", "layer3+4", "layer2+3+4", "layer1+2+3"]


def grid_order(name: str) -> tuple:
    """Sort key of a candidate name in the default grid's order: stages, patch size, aspect."""
    parts = name.split(", ")
    stages = STAGE_ORDER.index(parts[0]) if parts[0] in STAGE_ORDER else len(STAGE_ORDER)
    patch = re.search(r"p=(\d+)", name)
    return stages, int(patch.group(1)) if patch else 0, "aspect keep" in name


def fold_scores(path: Path) -> tuple[list[str], np.ndarray]:
    """Candidate names in grid order and their ``(candidates, folds)`` development scores."""
    with path.open() as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: grid_order(r["setting"]))
    folds = sorted((k for k in rows[0] if re.fullmatch(r"fold\d+", k)), key=lambda k: int(k[4:]))
    return [r["setting"] for r in rows], np.array([[float(r[k]) for k in folds] for r in rows])


def halving_choice(scores: np.ndarray, first_folds: int, keep: float) -> int:
    """The candidate successive halving chooses (an index into ``scores``' rows)."""
    n = len(scores)
    survivors = max(2, math.ceil(n * keep))
    early = np.argsort(-scores[:, :first_folds].mean(1), kind="stable")[:survivors]
    return int(min(early, key=lambda i: (-scores[i].mean(), i)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args()
    files = args.files or sorted(Path("docs/tuning").glob("**/*candidates.csv"))
    same = total = 0
    for path in files:
        names, scores = fold_scores(path)
        full = int(min(range(len(names)), key=lambda i: (-scores[i].mean(), i)))
        verdicts = []
        for first_folds in (1, 2, 3):
            for keep in (1 / 3, 1 / 2):
                choice = halving_choice(scores, first_folds, keep)
                total += 1
                same += choice == full
                label = f"r={first_folds} keep {max(2, math.ceil(len(names) * keep))}"
                verdicts.append(f"{label}: {'=' if choice == full else names[choice]}")
        print(f"{path} ({len(names)} candidates): full grid chooses {names[full]} ({scores[full].mean():.4f})")
        print("    " + "; ".join(verdicts))
    print(f"\nhalving chose what the full grid chose in {same} of {total} replays")


if __name__ == "__main__":
    main()
