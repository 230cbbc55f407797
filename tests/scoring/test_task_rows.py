"""scores.parquet rows for every task type: each class (or finding) probability and each endpoint's decision under the
policy, checked against hand-computed values; the rows follow contract v2 and older files are refused by version."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medtl.contracts import read_table, write_table
from medtl.contracts.evaluation import ScoreRow, ScoreRowV1
from medtl.errors import DataContractError
from medtl.scoring.policy import Policy
from medtl.scoring.score import PARTS, SCORES, _row, merge_parts, scored_keys

RECORD = {
    "scan_id": "X-0000000000000001",
    "series_id": "S-0000000000000001",
    "study_id": None,
    "patient_id": "P-0000000000000001",
    "source_hash": "a" * 64,
}
GRADES = ["0", "1", "2", "3"]
FINDINGS = ["mass", "calc", "effusion"]


def _row_for(policy: Policy, probabilities: list[float] | None, *, flags=(), mode: str = "flag") -> dict:
    artifact = SimpleNamespace(metadata={"model_id": "m", "model_version": "1"}, manifest_hash="b" * 64, trusted=True)
    scorer = SimpleNamespace(policy=policy, artifact=artifact, approved=True)
    values = None if probabilities is None else np.array(probabilities)
    row = _row(scorer, RECORD, values, list(flags), mode, "2026-01-01T00:00:00+00:00")
    ScoreRow.model_validate(row)  # every row built here follows the contract
    return row


def test_binary_keeps_its_columns_and_gains_the_lists():
    row = _row_for(Policy("binary", ["normal", "disease"], "disease", thresholds={"disease": 0.6}), [0.3, 0.7])
    assert (row["probability"], row["decision"], row["threshold"]) == (pytest.approx(0.7), "disease", 0.6)
    assert row["task_kind"] == "binary" and row["classes"] == ["normal", "disease"]
    assert row["probabilities"] == pytest.approx([0.3, 0.7])
    assert row["endpoints"] == ["disease"] and row["endpoint_probabilities"] == pytest.approx([0.7])
    assert row["thresholds"] == [0.6] and row["decisions"] == [True]
    below = _row_for(Policy("binary", ["normal", "disease"], "disease", thresholds={"disease": 0.6}), [0.45, 0.55])
    assert below["decision"] == "normal" and below["decisions"] == [False]


def test_multiclass_decides_the_most_probable_class_with_or_without_an_evaluation():
    row = _row_for(Policy("multiclass", ["a", "b", "c"]), [0.2, 0.5, 0.3])
    assert row["decision"] == "b" and row["decisions"] == [False, True, False]
    assert row["probability"] is None and row["threshold"] is None and row["thresholds"] == [None, None, None]
    assert row["endpoints"] == ["a", "b", "c"] and row["probabilities"] == pytest.approx([0.2, 0.5, 0.3])


def test_ordinal_decides_every_cut_and_the_decision_cut_fills_the_binary_columns():
    thresholds = {"ge_1": 0.5, "ge_2": 0.75, "ge_3": 0.3}
    row = _row_for(Policy("ordinal", GRADES, cut="2", thresholds=thresholds), [0.1, 0.2, 0.3, 0.4])
    assert row["endpoints"] == ["ge_1", "ge_2", "ge_3"]
    assert row["endpoint_probabilities"] == pytest.approx([0.9, 0.7, 0.4])  # P(grade >= k) = sum of grades >= k
    assert row["decisions"] == [True, False, True] and row["thresholds"] == [0.5, 0.75, 0.3]
    assert row["probability"] == pytest.approx(0.7) and row["threshold"] == 0.75 and row["decision"] == "grade < 2"
    above = _row_for(Policy("ordinal", GRADES, cut="2", thresholds=thresholds), [0.05, 0.05, 0.1, 0.8])
    assert above["decision"] == "grade >= 2" and above["decisions"] == [True, True, True]


def test_multilabel_decides_the_set_of_findings_at_or_above_their_thresholds():
    thresholds = {"mass": 0.5, "calc": 0.2, "effusion": 0.45}
    row = _row_for(Policy("multilabel", FINDINGS, thresholds=thresholds), [0.8, 0.1, 0.45])
    assert row["decisions"] == [True, False, True] and row["decision"] == "mass|effusion"  # 0.45 >= 0.45
    assert row["probability"] is None and row["threshold"] is None
    assert row["endpoint_probabilities"] == pytest.approx([0.8, 0.1, 0.45])
    nothing = _row_for(Policy("multilabel", FINDINGS, thresholds=thresholds), [0.1, 0.1, 0.1])
    assert nothing["decision"] == "none" and nothing["decisions"] == [False, False, False]


def test_a_finding_without_a_threshold_leaves_the_set_undecided():
    row = _row_for(Policy("multilabel", FINDINGS, thresholds={"mass": 0.5, "calc": 0.2}), [0.8, 0.1, 0.9])
    assert row["decisions"] == [True, False, None] and row["decision"] is None


def test_without_an_evaluation_only_multiclass_decides():
    ordinal = _row_for(Policy("ordinal", GRADES, cut="2"), [0.1, 0.2, 0.3, 0.4])
    multilabel = _row_for(Policy("multilabel", FINDINGS), [0.8, 0.1, 0.9])
    for row in (ordinal, multilabel):
        assert row["decision"] is None and set(row["decisions"]) == {None} and set(row["thresholds"]) == {None}
    assert ordinal["probability"] == pytest.approx(0.7)  # the number is still reported
    assert _row_for(Policy("multiclass", ["a", "b", "c"]), [0.5, 0.2, 0.3])["decision"] == "a"


@pytest.mark.parametrize(
    "policy",
    [
        Policy("multiclass", ["a", "b", "c"]),
        Policy("ordinal", GRADES, cut="2", thresholds={"ge_1": 0.5, "ge_2": 0.5, "ge_3": 0.5}),
        Policy("multilabel", FINDINGS, thresholds=dict.fromkeys(FINDINGS, 0.2)),
    ],
    ids=lambda p: p.kind,
)
def test_an_abstained_row_keeps_its_probabilities_and_has_no_decisions(policy):
    row = _row_for(policy, [0.4, 0.3, 0.2, 0.1][: len(policy.classes)], flags=["feature_outlier"], mode="abstain")
    assert row["abstained"] and row["decision"] is None and set(row["decisions"]) == {None}
    assert len(row["probabilities"]) == len(policy.classes)
    unscored = _row_for(policy, None, flags=["kind_mismatch"])
    assert unscored["abstained"] and unscored["probabilities"] == [] and unscored["endpoint_probabilities"] == []


def test_a_temperature_scales_binary_numbers_only():
    scaled = _row_for(Policy("binary", ["n", "d"], "d", thresholds={"d": 0.6}, temperature=2.0), [0.3, 0.7])
    assert scaled["probabilities"][1] == pytest.approx(scaled["probability"]) and scaled["probability"] < 0.7
    assert sum(scaled["probabilities"]) == pytest.approx(1.0) and scaled["decision"] == "d"
    ordinal = _row_for(Policy("ordinal", GRADES, cut="2", temperature=2.0), [0.1, 0.2, 0.3, 0.4])
    assert ordinal["probability"] == pytest.approx(0.7)


def _rows_of_every_kind() -> pd.DataFrame:
    rows = [
        _row_for(Policy("binary", ["n", "d"], "d", thresholds={"d": 0.6}), [0.3, 0.7]),
        _row_for(Policy("multiclass", ["a", "b", "c"]), [0.2, 0.5, 0.3]),
        _row_for(Policy("ordinal", GRADES, cut="2", thresholds={"ge_2": 0.75}), [0.1, 0.2, 0.3, 0.4]),
        _row_for(Policy("multilabel", FINDINGS, thresholds={"mass": 0.5}), [0.8, 0.1, 0.9]),
        _row_for(Policy("multilabel", FINDINGS), None, flags=["kind_mismatch"]),
    ]
    for number, row in enumerate(rows):
        row["input_hash"] = f"{number:064x}"
    return pd.DataFrame(rows, columns=list(ScoreRow.model_fields))


def test_rows_of_every_kind_share_one_parquet_file_and_read_back_the_same(tmp_path: Path):
    frame = _rows_of_every_kind()
    write_table(ScoreRow, frame, tmp_path / SCORES)
    back = read_table(ScoreRow, tmp_path / SCORES)
    assert list(back.task_kind) == ["binary", "multiclass", "ordinal", "multilabel", "multilabel"]
    ordinal = back.iloc[2]
    assert list(ordinal.endpoints) == ["ge_1", "ge_2", "ge_3"] and list(ordinal.decisions) == [None, False, None]
    assert ordinal.thresholds[1] == 0.75 and np.isnan(ordinal.thresholds[0])  # pandas shows a missing item as NaN
    assert list(back.iloc[3].decisions) == [True, None, None] and list(back.iloc[4].probabilities) == []
    assert list(back.iloc[1].probabilities) == pytest.approx([0.2, 0.5, 0.3])


def test_lists_that_disagree_with_the_classes_break_the_contract():
    row = _row_for(Policy("multiclass", ["a", "b", "c"]), [0.2, 0.5, 0.3])
    with pytest.raises(ValueError, match="one value per class"):
        ScoreRow.model_validate({**row, "probabilities": [0.2, 0.8]})
    with pytest.raises(ValueError, match="one entry per endpoint"):
        ScoreRow.model_validate({**row, "decisions": [True]})


def _v1_file(path: Path) -> None:
    row = {k: v for k, v in _rows_of_every_kind().iloc[0].items() if k in ScoreRowV1.model_fields}
    write_table(ScoreRowV1, pd.DataFrame([row], columns=list(ScoreRowV1.model_fields)), path)


def test_a_v1_reader_given_a_v2_file_is_told_which_version_it_found(tmp_path: Path):
    write_table(ScoreRow, _rows_of_every_kind(), tmp_path / SCORES)
    with pytest.raises(DataContractError) as caught:
        read_table(ScoreRowV1, tmp_path / SCORES)
    assert "expected contract 'scores' version 1" in str(caught.value) and "scores v2" in str(caught.value)


@pytest.mark.parametrize("where", [SCORES, f"{PARTS}/part-0000000000000000.parquet"])
def test_resuming_into_a_folder_with_v1_scores_is_refused_with_the_version_and_what_to_do(tmp_path: Path, where):
    (tmp_path / PARTS).mkdir()
    _v1_file(tmp_path / where)
    for resume in (scored_keys, merge_parts):
        with pytest.raises(DataContractError) as caught:
            resume(tmp_path)
        message = str(caught.value)
        assert "already holds scores version 1" in message and "this medtl writes scores version 2" in message
        assert "score into a new --out folder" in message and where in message
