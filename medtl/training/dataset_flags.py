"""QC flags that describe a whole dataset rather than its outliers.

`possible_label_map` marks images with few distinct values. On a handful of scans it points at a segmentation saved
where an image belongs; on most of a dataset's scans the dataset *is* masks or other few-valued images (shape
analysis), and leaving the flagged scans out would leave nothing to learn from. Planning and pretraining apply the
same rule, so a mask dataset is trained and pretrained on alike, and both say why the scans were kept.
"""

from __future__ import annotations

import pandas as pd

DATASET_WIDE_FLAGS = ("possible_label_map",)
DATASET_WIDE_SHARE = 0.5  # a flag on more than half of the scans describes the dataset, not outliers


def dataset_wide_flags(qc_flags: pd.Series) -> dict[str, float]:
    """The dataset-wide flags carried by more than DATASET_WIDE_SHARE of these scans (one list of flags per scan),
    with their shares."""
    if qc_flags.empty:
        return {}
    found = {}
    for flag in DATASET_WIDE_FLAGS:
        share = float(qc_flags.apply(lambda flags, flag=flag: flag in set(flags)).mean())
        if share > DATASET_WIDE_SHARE:
            found[flag] = share
    return found


def keep_dataset_wide(exclude_flags: list[str], qc_flags: pd.Series) -> tuple[list[str], dict[str, float]]:
    """EXCLUDE_FLAGS less the dataset-wide flags these scans carry, and the flags so kept with their shares."""
    kept = {flag: share for flag, share in dataset_wide_flags(qc_flags).items() if flag in exclude_flags}
    return [flag for flag in exclude_flags if flag not in kept], kept


def kept_reason(flag: str, share: float, scans: str = "scans") -> str:
    return f"{flag} is on {share:.0%} of the {scans}: it describes this dataset (e.g. shape masks), not outliers"
