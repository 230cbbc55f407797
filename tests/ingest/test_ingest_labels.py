"""The labels file: contract errors that name rows, and a join that reports instead of guessing."""

from __future__ import annotations

import pytest

from medtl.errors import DataContractError, LabelsError
from medtl.ingest.labels import LabelIndex, ScanKeys, read_labels


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
