"""A backbone pretrained on a patient's scans must not be tested on that patient.

`medtl pretrain` leaves out the locked-test patients of the datasets it is given, but the dataset trained on now may
be another export, whose test split the pretraining never saw. The pretrained artifact lists every patient it was
pretrained on (by pseudonym), so training checks its own locked test set against that list before any work.
"""

from __future__ import annotations

from pathlib import Path

from medtl.errors import LeakageError
from medtl.models.config import ModelConfig


def check_pretraining_overlap(model: ModelConfig, locked_test: list[str]) -> None:
    """Raise LeakageError when the weights come from a pretrained artifact that saw a locked-test patient."""
    if model.weights.source != "artifact" or not locked_test:
        return
    from medtl.artifacts import open_verified
    from medtl.artifacts.contents import pretraining_record

    verified = open_verified(Path(model.weights.path).expanduser())
    if verified.kind != "pretrained":
        return
    record = pretraining_record(verified)
    shared = set(record.patients_used) & set(locked_test)
    if shared:
        raise LeakageError(
            f"{len(shared)} patient(s) of this dataset's locked test set were pretrained on by "
            f"{verified.folder.name}: their test results would be optimistic",
            where=verified.folder.name,
            fix="pretrain again with this dataset among the inputs (its test split is then left out) or with "
            "--exclude-patients-of naming it, or choose another weight source",
        )
