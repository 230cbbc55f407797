"""What a model learnt from through its starting weights counts as seen: a source model's training patients and
everything that source's own lineage lists; an artifact sealed before lineage was recorded is checked through its
named source, and refused with a clear error when that source cannot be opened."""

from __future__ import annotations

import pandas as pd
import pytest

from medtl.artifacts import open_verified
from medtl.artifacts.contents import ArtifactContents
from medtl.artifacts.layout import CONFIG, LINEAGE, OOF_PREDICTIONS
from medtl.contracts.base import contract_document
from medtl.contracts.lineage import LearntFrom, Lineage
from medtl.errors import ConfigError, LeakageError
from medtl.training.lineage import check_lineage, recorded_lineage, source_lineage

PRETRAINED_ON = [f"P-{i:016x}" for i in range(100, 104)]


def oof_of(patients: range) -> pd.DataFrame:
    n = len(patients)
    return pd.DataFrame(
        {"scan_id": [f"S-{i:016x}" for i in patients], "patient_id": [f"P-{i:016x}" for i in patients],
         "label": ["0", "1"] * (n // 2), "target": [0, 1] * (n // 2), "fold": [0, 1] * (n // 2), "arm": "main",
         "probability": [0.2, 0.8] * (n // 2), "p_0": [0.8, 0.2] * (n // 2), "p_1": [0.2, 0.8] * (n // 2)}
    )  # fmt: skip


@pytest.fixture
def source(tmp_path, build, keys):
    """A model trained on P-000..005, itself fine-tuned from a backbone pretrained on P-100..103."""
    inherited = Lineage(sources=[LearntFrom(kind="pretrained", artifact_name="site-backbone",
                                            artifact_manifest_hash="a" * 64, patients=PRETRAINED_ON)])  # fmt: skip

    def contents(builder) -> None:
        builder.add_table(OOF_PREDICTIONS, oof_of(range(6)))
        builder.add_json(LINEAGE, contract_document(inherited))

    return build(tmp_path / "source-model", signing_key=keys["private"], extra=contents)


def test_a_source_models_patients_and_its_own_lineage_are_seen(source):
    lineage = source_lineage(open_verified(source.folder))
    assert [(s.kind, s.artifact_name) for s in lineage.sources] == [("model", "source-model"),
                                                                   ("pretrained", "site-backbone")]  # fmt: skip
    assert lineage.sources[0].patients == [f"P-{i:016x}" for i in range(6)]
    with pytest.raises(LeakageError, match=r"^2 test patient\(s\) were in the training of source-model") as raised:
        check_lineage(lineage, {f"P-{1:016x}", f"P-{4:016x}", f"P-{99:016x}"}, who="the challenger")
    assert "P-" not in str(raised.value)
    with pytest.raises(LeakageError, match=r"^1 test patient\(s\) were pretrained on by site-backbone"):
        check_lineage(lineage, {PRETRAINED_ON[2]})
    check_lineage(lineage, {f"P-{99:016x}"})  # unseen patients pass
    check_lineage(Lineage(), {f"P-{1:016x}"})  # weights from nowhere (scratch, ImageNet): nothing to check


def test_an_artifact_without_lineage_whose_source_is_gone_is_refused_with_a_clear_error(tmp_path, build, keys):
    config = {"model": {"backbone": "resnet18", "weights": {"source": "artifact", "path": "moved-backbone"}}}

    def contents_before_lineage(builder) -> None:
        builder.add_table(OOF_PREDICTIONS, oof_of(range(6)))
        builder.add_yaml(CONFIG, config)  # replaces the fixture's: a weight source named by folder name only

    old = build(tmp_path / "old-model", signing_key=keys["private"], extra=contents_before_lineage)
    contents = ArtifactContents(open_verified(old.folder))
    assert not contents.has_lineage
    with pytest.raises(ConfigError, match="moved-backbone, which it does not describe"):
        recorded_lineage(contents)
