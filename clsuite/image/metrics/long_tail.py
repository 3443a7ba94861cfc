"""Long-tail metrics: accuracy on many-, medium- and few-shot classes.

The partition comes from the prepared benchmark's manifest (``variants.long_tail.partition``,
docs/data-format.md): classes grouped by their number of training images. At stage i
(after experience i) a group's accuracy pools the clean test samples of its classes that
belong to experiences 0..i (classes seen so far); a group with no seen class has no value
at that stage. Samples are pooled, which equals the mean of per-class accuracies when
every class has the same number of test images (the long-tail test split stays
balanced). Clean rows only.
"""

from __future__ import annotations

import pandas as pd

from clsuite.core.matrix import PRED_COLUMN, clean_rows
from clsuite.image.schemas import SHOTS


def shot_of_class(partition: dict[str, list[int]]) -> dict[int, str]:
    """{class label: "many" | "medium" | "few"}; a class listed twice is an error."""
    out: dict[int, str] = {}
    for shot in SHOTS:
        for c in partition.get(shot, []):
            if int(c) in out:
                raise ValueError(f"class {c} is in both {out[int(c)]!r} and {shot!r} of the long-tail partition")
            out[int(c)] = shot
    return out


def shot_accuracy(records: pd.DataFrame, partition: dict[str, list[int]], protocol: str = "class_il") -> pd.DataFrame:
    """Per stage ≥ 0 and shot group: accuracy, n_classes (seen), n_samples.

    ``partition``: {"many": [labels], "medium": [...], "few": [...]}. Rows are ordered by
    stage, then many → medium → few; groups without seen classes are left out.
    """
    r = clean_rows(records)
    r = r[(r["train_exp"] >= 0) & (r["eval_exp"] <= r["train_exp"])]
    shots = r["y_true"].map(shot_of_class(partition))
    d = pd.DataFrame({"train_exp": r["train_exp"], "shot": shots, "y_true": r["y_true"],
                      "correct": r[PRED_COLUMN[protocol]] == r["y_true"]}).dropna(subset=["shot"])
    out = d.groupby(["train_exp", "shot"], sort=False).agg(
        accuracy=("correct", "mean"), n_classes=("y_true", "nunique"), n_samples=("correct", "size")).reset_index()
    out["order"] = out["shot"].map({s: k for k, s in enumerate(SHOTS)})
    out = out.sort_values(["train_exp", "order"]).drop(columns="order").reset_index(drop=True)
    return out.astype({"train_exp": "int64", "shot": "str", "accuracy": "float64", "n_classes": "int64",
                       "n_samples": "int64"})
