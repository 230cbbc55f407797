"""Data contracts: one source of truth, validation that lists every problem, and files that round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from medtl.contracts import ALL_CONTRACTS, LabelRow, PreprocessingSpec, read_json, validate_rows, write_json
from medtl.contracts import base as contract_base
from medtl.contracts.base import read_rows, read_table, write_rows, write_table
from medtl.contracts.ingest import ManifestRow
from medtl.contracts.schemas import render
from medtl.errors import DataContractError

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "data_contracts"


@pytest.mark.parametrize("model", ALL_CONTRACTS, ids=lambda m: m.contract_name)
def test_committed_schema_equals_the_generated_one(model):
    committed = (CONTRACTS_DIR / model.schema_filename()).read_text(encoding="utf-8")
    assert committed == render(model), f"run `make schemas` and commit {model.schema_filename()}"


def test_every_schema_file_belongs_to_a_contract():
    expected = {model.schema_filename() for model in ALL_CONTRACTS}
    assert {p.name for p in CONTRACTS_DIR.glob("*.schema.json")} == expected


def test_every_stage_boundary_has_a_contract():
    names = {model.contract_name for model in ALL_CONTRACTS}
    assert {"labels", "manifest", "fingerprint", "ingest_report", "preprocessing", "splits"} <= names
    assert {"artifact_metadata", "artifact_manifest", "audit_event", "metrics", "scores"} <= names


def test_validation_lists_every_problem_with_row_column_value_and_rule():
    rows = [
        {"patient_id": "A", "label": "1"},
        {"patient_id": "", "label": "1"},
        {"patient_id": "C", "label": "no spaces allowed", "split": "holdout"},
    ]
    with pytest.raises(DataContractError) as caught:
        validate_rows(LabelRow, rows, first_row_number=2)
    problems = caught.value.problems
    assert [p.location for p in problems] == ["row 3, column patient_id", "row 4, column label", "row 4, column split"]
    assert problems[2].value == "'holdout'"
    assert "pattern" in problems[1].rule
    assert "3 problem(s)" in str(caught.value) and "data_contracts/" in str(caught.value)


def test_json_documents_round_trip_and_match_their_json_schema(tmp_path):
    spec = PreprocessingSpec(spatial_dims=3, target_spacing=[1.0, 1.0, 2.0], target_shape=[64, 64, 32])
    path = tmp_path / "preprocessing.json"
    write_json(spec, path)
    assert read_json(PreprocessingSpec, path) == spec
    document = json.loads(path.read_text())
    schema = json.loads((CONTRACTS_DIR / PreprocessingSpec.schema_filename()).read_text())
    payload = {k: v for k, v in document.items() if k not in ("contract", "contract_version")}
    jsonschema.validate(payload, schema)
    payload["target_shape"] = "big"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, schema)


def test_a_file_of_another_contract_or_version_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"contract": "fingerprint", "contract_version": 1}))
    with pytest.raises(DataContractError, match="expected contract 'preprocessing' version 1"):
        read_json(PreprocessingSpec, path)
    path.write_text(json.dumps({"contract": "preprocessing", "contract_version": 2, "spatial_dims": 2}))
    with pytest.raises(DataContractError, match="compatibility rules"):
        read_json(PreprocessingSpec, path)


def test_a_document_read_in_one_pass_equals_the_one_written_and_is_of_the_contract_type(tmp_path, monkeypatch):
    from medtl.contracts.ingest import AxisStats, Fingerprint, GroupStats, IntensityStats

    axis = AxisStats(p05=1.0, median=2.0, p95=3.0)
    group = GroupStats(
        image_kind="volume", modality="CT", n_scans=2, spacing=[axis] * 3, shape=[axis] * 3,
        intensity=IntensityStats(p01=float("-inf"), p50=0.0, p99=float("nan"), mean=1.0, std=2.0),
    )  # fmt: skip
    written = Fingerprint(
        medtl_version="0", pseudonym_key_id="k", manifest_hash="a" * 64, n_scans=2, n_patients=1, n_studies=1,
        modalities={"CT": 2}, labels={}, patients_per_label={}, groups=[group], preprocessing_hash=None,
    )  # fmt: skip
    write_json(written, tmp_path / "fingerprint.json")
    monkeypatch.setattr(contract_base, "_read_json_in_steps", lambda *a: pytest.fail("a valid file took the slow path"))
    back = read_json(Fingerprint, tmp_path / "fingerprint.json")
    assert type(back) is Fingerprint and back.model_fields_set == written.model_fields_set
    assert (
        back.groups[0].intensity.p01 == float("-inf") and back.groups[0].intensity.p99 != back.groups[0].intensity.p99
    )
    assert back.model_dump_json() == written.model_dump_json()
    # the same text as the standard library writes the document's JSON form (NaN and infinities as it writes them)
    text = (tmp_path / "fingerprint.json").read_text(encoding="utf-8")
    assert text == json.dumps(contract_base.contract_document(written), indent=2, ensure_ascii=False) + "\n"
    assert '"p01": -Infinity' in text and '"p99": NaN' in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b'{"contract": "preprocessing", "contract_version": 1, "spatial_dims": 2,', "not valid JSON"),
        (b'{"contract": "preprocessing", "contract_version": 1, "spatial_dims": "two"}', "spatial_dims"),
    ],
)
def test_a_hostile_document_is_a_contract_error_naming_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "preprocessing.json"
    path.write_bytes(content)
    with pytest.raises(DataContractError, match=message):
        read_json(PreprocessingSpec, path)


def test_a_folder_in_place_of_a_document_is_a_contract_error_that_does_not_quote_its_path(tmp_path):
    path = tmp_path / "PATIENT_NAME" / "preprocessing.json"
    path.mkdir(parents=True)
    with pytest.raises(DataContractError, match="cannot be read") as caught:
        read_json(PreprocessingSpec, path)
    assert "PATIENT_NAME" not in str(caught.value)


def test_an_oversized_document_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "preprocessing.json"
    path.write_text(json.dumps({"contract": "preprocessing", "contract_version": 1}) + " " * 2048)
    monkeypatch.setattr(contract_base, "MAX_DOCUMENT_BYTES", 1024)
    monkeypatch.setattr(Path, "read_bytes", lambda *a, **k: pytest.fail("read before its size was checked"))
    with pytest.raises(DataContractError, match="larger than"):
        read_json(PreprocessingSpec, path)


def test_semantic_rules_are_part_of_the_contract():
    with pytest.raises(DataContractError, match="target_shape must have 3"):
        from medtl.contracts import validate_document

        validate_document(PreprocessingSpec, {"spatial_dims": 3, "target_shape": [64, 64]})


def _manifest_row(number: int) -> dict:
    """A valid manifest row holding the required fields only."""
    return {
        "scan_id": f"X-{number:016x}",
        "patient_id": "P-0123456789abcdef",
        "series_id": "R-0123456789abcdef",
        "volume_index": 0,
        "volumes_in_series": 1,
        "source_format": "dicom",
        "modality": "CT",
        "image_kind": "volume",
        "n_files": 3,
        "shape": [4, 4, 3],
        "spacing": [1.0, 1.0, 2.0],
        "affine": [1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 2.0, 0, 0, 0, 0, 1.0],
        "orientation": "RAS",
        "pixel_hash": "a" * 64,
        "source_hash": "b" * 64,
        "cache_path": "cache/arrays/aa/x.npy",
        **{f"intensity_{name}": 0.5 for name in ("min", "max", "mean", "std", "p01", "p99")},
        "qc_flags": [],
    }


def _manifest_rows(n: int) -> list[dict]:
    """Valid rows with every field present (the optional ones None)."""
    return [{**{name: None for name in ManifestRow.model_fields}, **_manifest_row(number)} for number in range(n)]


def test_tables_carry_their_contract_and_are_validated_on_read(tmp_path):
    row = {**_manifest_row(0x0123456789ABCDEF), "qc_flags": ["slice_gap"]}
    frame = pd.DataFrame([{**{name: None for name in ManifestRow.model_fields}, **row}])
    path = tmp_path / "manifest.parquet"
    write_table(ManifestRow, frame, path)
    back = read_table(ManifestRow, path)
    assert list(back.qc_flags.iloc[0]) == ["slice_gap"]
    (plain,) = read_rows(ManifestRow, path)  # the same row without pandas: plain Python values
    assert plain["qc_flags"] == ["slice_gap"] and plain["shape"] == [4, 4, 3] and type(plain["n_files"]) is int
    assert plain == {**{name: None for name in ManifestRow.model_fields}, **row}
    rows_path = tmp_path / "rows.parquet"  # plain rows, written without pandas: the same table read back
    write_rows(ManifestRow, [dict(row), {**plain, "scan_id": "X-00000000000000ff"}], rows_path)
    assert read_rows(ManifestRow, rows_path) == [plain, {**plain, "scan_id": "X-00000000000000ff"}]
    assert read_table(ManifestRow, rows_path).iloc[:1].equals(back)
    frame.loc[0, "patient_id"] = "PAT001"  # a real identifier instead of a pseudonym
    with pytest.raises(DataContractError, match="row 0, column patient_id"):
        write_table(ManifestRow, frame, tmp_path / "bad.parquet")
    with pytest.raises(DataContractError, match="row 1, column patient_id"):
        write_rows(ManifestRow, [plain, {**plain, "patient_id": "PAT001"}], tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_a_table_checked_column_by_column_finds_the_cells_a_row_by_row_check_finds():
    """The column check (fast, used by read_rows and write_rows) and validate_rows report the same cells with the
    same rules, nested positions and optional columns included."""
    rows = _manifest_rows(5)
    cells = [
        (1, "patient_id", "PAT001"), (2, "shape", [4]), (2, "volume_index", -1), (0, "source_format", "png"),
        (3, "qc_flags", None), (1, "study_id", "S-1"), (3, "spacing", [1.0, "x", 2.0]), (4, "label", 7),
    ]  # fmt: skip
    for index, column, value in cells:
        rows[index][column] = value
    with pytest.raises(DataContractError) as by_row:
        validate_rows(ManifestRow, rows, first_row_number=2)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    with pytest.raises(DataContractError) as by_column:
        contract_base.check_columns(ManifestRow, columns, first_row_number=2)

    def found(caught):
        return sorted((p.location, p.rule, p.value) for p in caught.value.problems)

    assert found(by_column) == found(by_row)
    assert len(found(by_row)) == len(cells)
    assert ("row 5, column spacing.1", "Input should be a valid number, unable to parse string as a number", "'x'") in (
        found(by_column)
    )
    contract_base.check_columns(ManifestRow, {name: [row[name] for row in _manifest_rows(3)] for name in rows[0]})
    contract_base.check_columns(ManifestRow, {})  # no rows, no cells to check: as validate_rows([])


def test_written_rows_with_a_key_the_contract_lacks_or_without_a_required_one_are_refused(tmp_path):
    rows = _manifest_rows(3)
    rows[1]["patient_name"] = "DOE^JANE"
    with pytest.raises(DataContractError, match="column patient_name") as caught:
        write_rows(ManifestRow, rows, tmp_path / "extra.parquet")
    assert caught.value.problems[0].value is None and "DOE" not in str(caught.value)  # a whole column: not quoted
    without = [{key: value for key, value in row.items() if key != "pixel_hash"} for row in _manifest_rows(2)]
    columns = {name: [row[name] for row in without] for name in without[0]}
    with pytest.raises(DataContractError, match="column pixel_hash"):
        contract_base.check_columns(ManifestRow, columns)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content", [b"PAR1garbagePAR1", b"", b"not parquet at all, a text file"])
def test_an_unreadable_table_is_a_contract_error_that_does_not_quote_its_path(tmp_path, content):
    path = tmp_path / "PATIENT_NAME" / "manifest.parquet"
    path.parent.mkdir()
    path.write_bytes(content)
    for read in (read_table, read_rows):
        with pytest.raises(DataContractError, match="not a readable Parquet file") as caught:
            read(ManifestRow, path)
        assert "PATIENT_NAME" not in str(caught.value)


def test_rows_reach_pydantic_as_the_same_plain_values_by_either_conversion():
    """Arrow's conversion (fast) and the per-cell one (for columns Arrow cannot type) give pydantic the same values:
    NaN and NA as None, arrays as lists, numpy scalars as Python numbers. A mixed column still names its cell."""
    import numpy as np

    frame = pd.DataFrame(
        {
            "name": ["a", None, "c"],
            "value": [1.5, np.nan, 3.0],
            "count": pd.array([1, None, 3], dtype="Int64"),
            "flags": [np.array(["x", "y"]), np.array([], dtype=str), None],
            "shape": [np.array([4, 4, 3]), np.array([2, 2]), np.array([1])],
            "ok": [True, False, True],
        }
    )
    columns, by_cell = contract_base._columns(frame), contract_base._records_by_cell(frame)
    fast = contract_base.rows_of(columns)
    assert fast == by_cell
    assert fast[1] == {"name": None, "value": None, "count": None, "flags": [], "shape": [2, 2], "ok": False}
    assert all(type(row["shape"][0]) is int and type(row["ok"]) is bool for row in fast)

    mixed = pd.DataFrame({"patient_id": ["A", "B"], "label": ["1", ["0"]]})  # Arrow cannot type the label column
    with pytest.raises(DataContractError, match="row 1, column label"):
        contract_base.validate_frame(LabelRow, mixed)


def test_report_file_records_are_columns_on_disk_and_records_to_readers(tmp_path):
    from medtl.contracts import IngestReport
    from medtl.contracts.ingest import FileRecord, FileRecords

    def record(n: int, source: int, **fields) -> FileRecord:
        return FileRecord(**{"file_id": f"F-{n:016x}", "source_index": source, "size_bytes": n, "status": "ingested",
                             **fields})  # fmt: skip

    records = [record(3, 1), record(2, 0, sha256="a" * 64, series_id="R-" + "1" * 16, scan_ids=["X-" + "2" * 16]),
               record(1, 1, status="skipped", reason_code="not_an_image", reason="not DICOM")]  # fmt: skip
    files = FileRecords.of(records)
    assert [r.file_id for r in files.ordered()] == ["F-0000000000000002", "F-0000000000000001", "F-0000000000000003"]
    assert list(files.take([2, 0])) == [records[2], records[0]] and files[1] == records[1] and files[1:] == records[1:]
    assert FileRecords.concat(files.take([0]), files.take([1, 2])) == files == records
    assert files.positions() == {r.file_id: i for i, r in enumerate(records)}
    report = IngestReport(medtl_version="0", pseudonym_key_id="k", n_sources=2, counts={}, reasons={}, n_scans=1,
                          files=records)  # fmt: skip
    write_json(report, tmp_path / "report.json")
    on_disk = json.loads((tmp_path / "report.json").read_text())["files"]
    assert on_disk["file_id"] == [r.file_id for r in records] and on_disk["scan_ids"] == [[], ["X-" + "2" * 16], []]
    assert read_json(IngestReport, tmp_path / "report.json") == report
    with pytest.raises(ValueError, match="file_id"):  # a list of records is validated as records are
        IngestReport.model_validate({**report.model_dump(), "files": [{**records[0].model_dump(), "file_id": "x"}]})


def test_file_records_made_unvalidated_are_checked_together_cell_by_cell():
    """A run makes one record per file read without validating it (model_construct); `FileRecords.checked` then
    validates every cell in one pass and names the row and column of a bad one."""
    from medtl.contracts.ingest import FileRecord, FileRecords

    def made(n: int, **fields) -> FileRecord:
        values = {"file_id": f"F-{n:016x}", "source_index": 0, "size_bytes": n, "sha256": None, "status": "ingested",
                  "reason_code": None, "reason": None, "series_id": None, "scan_ids": [], **fields}  # fmt: skip
        return FileRecord.model_construct(**values)

    good = [made(1), made(2, status="quarantined", reason_code="decode_failed", reason="bad pixels")]
    assert FileRecords.checked(good) == FileRecords.of(good) == good
    bad = [*good, made(3, reason_code="Not A Code"), made(4, size_bytes=-1)]
    with pytest.raises(DataContractError) as raised:
        FileRecords.checked(bad)
    where = {(problem.location.split(",")[0], problem.location.split()[-1]) for problem in raised.value.problems}
    assert where == {("row 2", "reason_code"), ("row 3", "size_bytes")}
