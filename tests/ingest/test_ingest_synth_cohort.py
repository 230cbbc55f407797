"""Ingest of the synthetic cohort with every planted problem: each file ends as cohort.json says it must.

cohort.json is written by the generator, independently of ingest: it records each series' geometry, encoding and
intended HU values, and the expected fate of every problem file. This is the end-to-end check of the promise
"every input file ingested, skipped or quarantined, with a reason, and nothing misread".
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medtl.contracts import read_json, read_table
from medtl.contracts.ingest import IngestReport, ManifestRow
from medtl.datasets.synth import make_cohort
from medtl.datasets.synth.truth import expected_values, iter_series
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.pipeline import ingest_sources
from medtl.io.geometry import LPS_TO_RAS, to_canonical

PSEUDO = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth-ingest")
    cohort = make_cohort(root / "cohort", patients=8, seed=11, with_problems=True)
    common = {"labels": root / "cohort" / "labels.csv", "pseudonymizer": PSEUDO, "workers": 2}
    ingest_sources([root / "cohort" / "dicom"], out=root / "from-dicom", **common)
    ingest_sources([root / "cohort" / "nifti"], out=root / "from-nifti", **common)
    return root, cohort.truth


def _outputs(root: Path, name: str):
    out = root / name
    report = read_json(IngestReport, out / "ingest_report.json")
    manifest = read_table(ManifestRow, out / "manifest.parquet")
    with open(out / "private" / "source_index.csv", newline="") as handle:
        ids = {row["relative_path"]: row["file_id"] for row in csv.DictReader(handle)}
    return report, manifest, ids


def test_every_file_is_accounted_for_exactly_once(ingested):
    root, _truth = ingested
    report, _, ids = _outputs(root, "from-dicom")
    on_disk = sorted(
        p.relative_to(root / "cohort" / "dicom").as_posix()
        for p in (root / "cohort" / "dicom").rglob("*")
        if p.is_file()
    )
    assert sorted(ids) == on_disk
    assert len(report.files) == len(on_disk) == len({f.file_id for f in report.files})
    assert sum(report.counts.values()) == len(on_disk)


def test_each_planted_problem_meets_its_expected_fate(ingested):
    root, truth = ingested
    for source in ("dicom", "nifti"):
        report, manifest, ids = _outputs(root, f"from-{source}")
        by_id = {record.file_id: record for record in report.files}
        flags_by_scan = dict(zip(manifest.scan_id, manifest.qc_flags, strict=True))
        for problem in truth["problems"]:
            listed = [problem["skipped_file"]] if problem["kind"] == "duplicate_instance" else problem["files"]
            files = [f for f in listed if f.startswith(f"{source}/")]
            for relative in files:
                record = by_id[ids[relative.removeprefix(f"{source}/")]]
                fate = problem["fate"]
                if fate == "flagged":
                    assert record.status == "ingested", (problem["kind"], record)
                    assert any(problem["flag"] in list(flags_by_scan[s]) for s in record.scan_ids), problem["kind"]
                else:
                    assert record.status == fate, (problem["kind"], record.status, record.reason)
                    if "reason_code" in problem:
                        assert record.reason_code == problem["reason_code"], problem["kind"]


def test_localizers_are_skipped_and_ct_and_dx_become_scans(ingested):
    root, truth = ingested
    report, manifest, _ = _outputs(root, "from-dicom")
    localizer_files = sum(len([f for f in s["files"] if f]) for _, _, s in iter_series(truth, "localizer"))
    assert report.reasons["localizer"] == localizer_files
    assert (manifest.modality == "CT").sum() == truth["counts"]["series_ct"]
    assert (manifest.modality == "DX").sum() == truth["counts"]["series_dx"]
    assert set(manifest.image_kind[manifest.modality == "DX"]) == {"image2d"}


def test_decoded_values_and_geometry_equal_the_generators_truth(ingested):
    root, truth = ingested
    _, manifest, _ = _outputs(root, "from-dicom")
    checked = 0
    for patient, _, series in iter_series(truth):
        if series["kind"] == "localizer":
            continue
        rows = manifest[manifest.series_id == PSEUDO.series(series["series_uid"])]
        assert len(rows) == 1, series["series_uid"]
        row = rows.iloc[0]
        stored = np.load(root / "from-dicom" / row.cache_path)
        values = expected_values(patient, series)
        if series["kind"] == "dx":
            expected = values.astype(np.float32)
            np.testing.assert_allclose(stored, expected, atol=1e-3)
        else:
            present = [k for k, f in enumerate(series["files"]) if f is not None]
            ijk = values[present].transpose(2, 1, 0)
            affine = LPS_TO_RAS @ np.asarray(series["geometry"]["affine_lps"], dtype=float)
            expected, expected_affine, _ = to_canonical(ijk.astype(np.float32), affine)
            np.testing.assert_allclose(stored, expected, atol=1e-3)
            if not series.get("missing_positions"):
                np.testing.assert_allclose(np.reshape(row.affine, (4, 4)), expected_affine, atol=1e-4)
            assert row.decoder == (
                "pylibjpeg" if series["transfer_syntax"] != "1.2.840.10008.1.2.1" else "medtl-native"
            )
        checked += 1
    assert checked == truth["counts"]["series_ct"] + truth["counts"]["series_dx"]


def test_labels_follow_the_patient_and_phi_columns_are_ignored(ingested):
    root, truth = ingested
    report, manifest, _ = _outputs(root, "from-dicom")
    expected = {PSEUDO.patient(p["patient_id"]): str(p["label"]) for p in truth["patients"]}
    for patient_id, label in zip(manifest.patient_id, manifest.label, strict=True):
        assert label == expected[patient_id]
    assert set(report.labels.ignored_columns) == {"patient_name", "birth_date", "accession_number"}
    assert report.labels.unmatched_rows == [] and report.labels.conflicting_rows == []


def test_nifti_copies_get_the_same_pseudonyms_and_values(ingested):
    root, truth = ingested
    _, dicom, _ = _outputs(root, "from-dicom")
    _, nifti, _ = _outputs(root, "from-nifti")
    ct = dicom[dicom.modality == "CT"].set_index("series_id")
    assert set(nifti.series_id) == set(ct.index)
    gaps = {PSEUDO.series(s["series_uid"]) for _, _, s in iter_series(truth, "ct") if s.get("missing_positions")}
    for row in nifti.itertuples():
        twin = ct.loc[row.series_id]
        assert (row.patient_id, row.study_id, row.label) == (twin.patient_id, twin.study_id, twin.label)
        if row.series_id not in gaps:  # the NIfTI copy of the gap series is complete
            assert row.pixel_hash == twin.pixel_hash


def test_no_phi_from_headers_or_labels_reaches_the_outputs(ingested):
    root, _truth = ingested
    terms = json.loads((root / "from-dicom" / "private" / "phi_terms.json").read_text())
    names = [part for name in terms["patient_names"] for part in name.replace(",", "^").split("^") if len(part) > 3]
    needles = names + terms["patient_ids"] + terms["accession_numbers"] + terms["birth_dates"]
    assert len(needles) > 20
    for out in ("from-dicom", "from-nifti"):
        for path in (root / out).iterdir():
            if path.is_file():
                text = path.read_bytes().decode("latin-1")
                leaked = [needle for needle in needles if needle in text]
                assert leaked == [], f"{path.name} contains {leaked[:3]}"
