"""The labels file: contract errors that name rows, and a join that reports instead of guessing."""

from __future__ import annotations

import pytest

from medtl.contracts import write_json
from medtl.contracts.task import TaskDeclaration
from medtl.datasets.synth import make_cohort
from medtl.errors import ConfigError, DataContractError, LabelsError
from medtl.ingest.declaration import check_with_labels_file, declare_task, suggestion
from medtl.ingest.labels import LabelIndex, ScanKeys, read_labels
from medtl.ingest.pipeline import MANIFEST, ingest_sources
from medtl.training.data import read_declaration
from support.trained import DEV_PSEUDONYMIZER, TINY_SPEC


def _write(tmp_path, text: str):
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_required_columns_are_named(tmp_path):
    with pytest.raises(LabelsError) as caught:
        read_labels(_write(tmp_path, "patient,diagnosis\nA,1\n"))
    text = str(caught.value)
    assert "'patient_id'" in text and "'label'" in text


def test_every_bad_row_is_listed_with_its_spreadsheet_row_number(tmp_path):
    path = _write(tmp_path, "patient_id,label,split\nA,1,train\n,0,train\nC,bad label!,test\nD,1,holdout\n")
    with pytest.raises(DataContractError) as caught:
        read_labels(path)
    locations = [problem.location for problem in caught.value.problems]
    assert locations == ["row 3, column patient_id", "row 4, column label", "row 5, column split"]


def test_extra_columns_are_ignored_and_reported(tmp_path):
    table = read_labels(_write(tmp_path, "patient_id,label,patient_name,birth_date\nA,1,DOE^JANE,19700101\n"))
    assert table.ignored_columns == ["patient_name", "birth_date"]
    assert "DOE" not in repr(table.rows)


def test_most_specific_row_wins_and_conflicts_are_not_resolved(tmp_path):
    path = _write(
        tmp_path,
        "patient_id,study_id,series_id,label\n"
        "A,,,0\n"  # row 2: patient level
        "A,1.2.3,,1\n"  # row 3: study level (by StudyInstanceUID)
        "B,ACC9,,1\n"  # row 4: study level (by accession number)
        "C,,,0\n"  # row 5
        "C,,,1\n"  # row 6: conflicts with row 5
        "Z,,,1\n",  # row 7: no scan
    )
    index = LabelIndex(read_labels(path))
    assert index.match(ScanKeys("A", "1.2.3", None, "9.9")).label == "1"
    assert index.match(ScanKeys("A", "7.7.7", None, "9.9")).label == "0"
    assert index.match(ScanKeys("B", "5.5", "ACC9", "9.9")).label == "1"
    conflict = index.match(ScanKeys("C", "1.1", None, "9.9"))
    assert conflict.conflict and conflict.label is None and conflict.rows == [5, 6]
    assert index.match(ScanKeys("Q", None, None, "9.9")) is None
    assert index.unmatched_rows() == [7]
    assert index.table.duplicate_rows == [6]


# -- the task declaration (--task-kind, --classes, ...), checked against the labels --------------------------------


def test_a_declaration_gets_its_classes_in_training_order(tmp_path):
    path = _write(tmp_path, "patient_id,label\nA,2\nB,10\nC,0\nD,1\n")
    declared = check_with_labels_file(declare_task("ordinal", decision_cut="2"), path)
    assert declared == TaskDeclaration(kind="ordinal", classes=["0", "1", "2", "10"], decision_cut="2")
    named = check_with_labels_file(declare_task("multilabel"), _write(tmp_path, "patient_id,label\nA,b|a\nB,none\n"))
    assert named.classes == ["a", "b"]


@pytest.mark.parametrize(
    ("kind", "classes", "labels", "message"),
    [
        ("ordinal", "0,1,2,3", "0 1 2", r"declared class\(es\) \['3'\] appear in no label"),
        ("ordinal", "0,1", "0 1 2", "at least three grades"),  # the contract's own rule, named as such
        ("multiclass", "a,b", "a b c", r"the labels use class\(es\) \['c'\] that are not declared"),
        ("multilabel", "x,y,z", "x|y none y", r"declared finding\(es\) \['z'\] appear in no label"),
        ("multilabel", "x,y", "x|y|z none", r"the labels use finding\(es\) \['z'\]"),
        ("binary", None, "a b c", "exactly two classes"),
        ("multiclass", None, "a|b c", "only a multilabel task allows"),
        ("ordinal", None, "mild moderate severe", "list the grades lowest first"),
    ],
)
def test_a_declaration_that_does_not_match_the_labels_is_refused(tmp_path, kind, classes, labels, message):
    rows = "".join(f"P{i},{label}\n" for i, label in enumerate(labels.split()))
    path = _write(tmp_path, "patient_id,label\n" + rows)
    with pytest.raises(ConfigError, match=message) as caught:
        check_with_labels_file(declare_task(kind, classes), path)
    assert caught.value.fix


def test_declaration_options_are_checked_together():
    assert declare_task(None) is None
    with pytest.raises(ConfigError, match="need --task-kind"):
        declare_task(None, "a,b")
    with pytest.raises(ConfigError, match="decision_cut applies to ordinal"):
        declare_task("multiclass", "a,b,c", decision_cut="b")
    with pytest.raises(ConfigError, match="needs --labels"):
        check_with_labels_file(declare_task("ordinal", "0,1,2"), None)


def test_a_task_json_file_is_a_declaration(tmp_path):
    path = tmp_path / "task.json"
    write_json(TaskDeclaration(kind="ordinal", classes=["0", "1", "2"]), path)
    assert declare_task(None, file=path).kind == "ordinal"
    with pytest.raises(ConfigError, match="cannot be combined"):
        declare_task("ordinal", file=path)


def test_grade_like_labels_without_a_declaration_get_a_hint():
    assert "--task-kind ordinal --classes 0,1,2,3" in suggestion({"3", "0", "2", "1"})
    assert suggestion({"0", "1"}) is None and suggestion({"benign", "malignant", "normal"}) is None


@pytest.mark.slow
def test_ingest_writes_the_checked_declaration_as_task_json(tmp_path):
    make_cohort(tmp_path / "c", patients=4, seed=2, task="ordinal", grades=3, prevalence=0.75)
    common = dict(labels=tmp_path / "c" / "labels.csv", spec=TINY_SPEC, pseudonymizer=DEV_PSEUDONYMIZER, workers=1)
    with pytest.raises(ConfigError, match=r"\['3'\] appear in no label"):
        ingest_sources(
            [tmp_path / "c" / "dicom"], out=tmp_path / "bad", task=declare_task("ordinal", "0,1,2,3"), **common
        )
    assert not (tmp_path / "bad" / MANIFEST).exists()  # refused before any scan was read

    result = ingest_sources([tmp_path / "c" / "dicom"], out=tmp_path / "d", task=declare_task("ordinal"), **common)
    assert read_declaration(tmp_path / "d") == TaskDeclaration(kind="ordinal", classes=["0", "1", "2"])
    assert "task.json (ordinal: 0, 1, 2)" in result.describe()

    undeclared = ingest_sources([tmp_path / "c" / "dicom"], out=tmp_path / "u", **common)
    assert read_declaration(tmp_path / "u") is None
    assert "--task-kind ordinal --classes 0,1,2" in undeclared.describe()
