"""Test patients must be patients no model in an artifact's lineage has seen: not in its training cross-validation,
not in what its starting weights learnt from (a backbone's pretraining pool, an earlier model's training and its
lineage; sealed in the artifact by training, `training.lineage`). `medtl evaluate --test` and `medtl compare` both
check this before scoring. Errors give counts, never pseudonyms."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtl.artifacts.contents import ArtifactContents
from medtl.errors import LeakageError
from medtl.training.data import read_manifest
from medtl.training.lineage import check_lineage, recorded_lineage


def locked_test_patients(dataset: Path) -> set[str]:
    """The patients _score_test will predict: the locked test split, or the whole dataset when it has none."""
    manifest = read_manifest(dataset)
    in_test = manifest["split"] == "test" if "split" in manifest else pd.Series(False, index=manifest.index)
    return set(manifest.loc[in_test if in_test.any() else slice(None), "patient_id"].astype(str))


def check_unseen(contents: dict[str, ArtifactContents], dataset: Path) -> None:
    """LeakageError when a test patient of DATASET was in the training cross-validation or the lineage of any
    artifact in CONTENTS (by role: model, champion, challenger)."""
    patients = locked_test_patients(dataset)
    seen = {role: len(patients & set(c.oof["patient_id"].astype(str))) for role, c in contents.items()}
    if any(seen.values()):
        counts = ", ".join(f"{n} in the {role}'s training" for role, n in seen.items() if n)
        raise LeakageError(
            f"{counts} (of {len(patients)} test patients): results on patients a model has seen are optimistic",
            where=dataset.name,
            fix="test on a locked test set no artifact here trained on (the training dataset's own test split, a "
            "later export's, or another site)",
        )
    for role, c in contents.items():
        check_lineage(recorded_lineage(c), patients, who=f"the {role}")
