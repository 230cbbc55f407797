"""MedMNIST import: tiny fake .npz files built here, plus the real BreastMNIST file when the shared data is present."""

from __future__ import annotations

import csv
import functools
import http.server
import os
import re
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage, UltrasoundImageStorage

from medtl.contracts import LabelRow, read_json, validate_rows
from medtl.contracts.labels import LABEL_PATTERN
from medtl.contracts.task import TaskDeclaration
from medtl.datasets.medmnist import MEDMNIST_SETS, import_medmnist
from medtl.errors import ConfigError, ReadError, UnknownNameError
from medtl.ingest.declaration import check_with_labels_file, declare_task

SPLIT_SIZES = {"train": 5, "val": 2, "test": 3}


def _fake_npz(path: Path, image_shape: tuple[int, ...], n_classes: int = 2, seed: int = 0, **override) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SPLIT_SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, n_classes, size=(n, 1), dtype=np.uint8)
    arrays.update(override)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    np.savez_compressed(path, **arrays)
    return arrays


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("name", "sop_class", "modality"),
    [
        ("breastmnist", UltrasoundImageStorage, "US"),
        ("pneumoniamnist", DigitalXRayImageStorageForPresentation, "DX"),
        ("octmnist", SecondaryCaptureImageStorage, "OT"),
    ],
)
def test_2d_greyscale_import_round_trips_pixels_and_labels(tmp_path, name, sop_class, modality):
    n_classes = len(MEDMNIST_SETS.get(name).classes)
    arrays = _fake_npz(tmp_path / f"{name}.npz", (28, 28), n_classes=n_classes)
    summary = import_medmnist(name, source=str(tmp_path / f"{name}.npz"), out=tmp_path / "out")
    assert summary.counts == SPLIT_SIZES
    rows = _rows(tmp_path / "out")
    validate_rows(LabelRow, rows)
    assert [r["split"] for r in rows] == [s for s, n in SPLIT_SIZES.items() for _ in range(n)]
    for row in rows:
        split, index = row["split"], int(row["patient_id"].rsplit("-", 1)[1])
        assert row["patient_id"] == f"{name}-{split}-{index:05d}"
        assert int(row["label"]) == int(arrays[f"{split}_labels"][index, 0])
        ds = pydicom.dcmread(tmp_path / "out" / row["patient_id"] / f"{row['patient_id']}.dcm")
        assert ds.SOPClassUID == sop_class and ds.Modality == modality
        assert ds.PatientID == row["patient_id"]
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 8
        assert "PixelSpacing" not in ds
        np.testing.assert_array_equal(ds.pixel_array, arrays[f"{split}_images"][index])
    assert "no patient ids" in summary.describe()


def test_modality_option_writes_another_tag_for_out_of_distribution_pairs(tmp_path):
    """A chest X-ray set written as ultrasound: same format and tag as a breast-ultrasound model's inputs."""
    arrays = _fake_npz(tmp_path / "p.npz", (28, 28))
    summary = import_medmnist("pneumoniamnist", source=str(tmp_path / "p.npz"), out=tmp_path / "out", modality="US")
    ds = pydicom.dcmread(tmp_path / "out" / "pneumoniamnist-test-00002" / "pneumoniamnist-test-00002.dcm")
    assert ds.Modality == "US" and ds.SOPClassUID == UltrasoundImageStorage
    assert "PresentationIntentType" not in ds  # the X-ray-only attributes go with the X-ray tag
    np.testing.assert_array_equal(ds.pixel_array, arrays["test_images"][2])
    assert summary.spec.modality == "US" and MEDMNIST_SETS.get("pneumoniamnist").modality == "DX"  # registry intact
    with pytest.raises(ConfigError, match="unknown modality"):
        import_medmnist("pneumoniamnist", source=str(tmp_path / "p.npz"), out=tmp_path / "bad", modality="XX")
    _fake_npz(tmp_path / "a.npz", (28, 28, 28))
    with pytest.raises(ConfigError, match="2D sets only"):
        import_medmnist("adrenalmnist3d", source=str(tmp_path / "a.npz"), out=tmp_path / "a3d", modality="US")


def test_rgb_set_is_written_as_rgb_secondary_capture(tmp_path):
    arrays = _fake_npz(tmp_path / "b.npz", (28, 28, 3), n_classes=8)
    import_medmnist("bloodmnist", source=str(tmp_path / "b.npz"), out=tmp_path / "out", limit=2)
    ds = pydicom.dcmread(tmp_path / "out" / "bloodmnist-val-00001" / "bloodmnist-val-00001.dcm")
    assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.PhotometricInterpretation == "RGB"
    assert ds.SamplesPerPixel == 3
    np.testing.assert_array_equal(ds.pixel_array, arrays["val_images"][1])


def test_3d_import_writes_nifti_volumes(tmp_path):
    arrays = _fake_npz(tmp_path / "a.npz", (28, 28, 28))
    summary = import_medmnist("adrenalmnist3d", source=str(tmp_path / "a.npz"), out=tmp_path / "out", limit=2)
    assert summary.counts == {"train": 2, "val": 2, "test": 2}
    rows = _rows(tmp_path / "out")
    assert len(rows) == 6
    image = nib.load(tmp_path / "out" / "adrenalmnist3d-test-00001" / "adrenalmnist3d-test-00001.nii.gz")
    assert image.shape == (28, 28, 28)
    np.testing.assert_array_equal(np.asarray(image.dataobj), arrays["test_images"][1])
    np.testing.assert_allclose(image.affine, np.eye(4))


def test_import_is_deterministic(tmp_path):
    _fake_npz(tmp_path / "x.npz", (28, 28))
    for out in ("one", "two"):
        import_medmnist("breastmnist", source=str(tmp_path / "x.npz"), out=tmp_path / out)
    one = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*") if p.is_file()}
    two = {p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*") if p.is_file()}
    assert one == two


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"val_labels": None}, "lacks the key"),
        ({"train_labels": np.zeros((4, 1), np.uint8)}, "has 4 rows but train_images has 5"),
        ({"test_images": np.zeros((3, 32, 32), np.uint8)}, "test_images"),
        ({"train_labels": np.full((5, 1), 7, np.uint8)}, "outside 0..1"),
        ({"val_labels": np.zeros((2, 3), np.uint8)}, "multi-label"),
        ({"val_labels": np.zeros((2, 1), np.float32)}, "integer class labels"),
    ],
)
def test_broken_npz_is_refused_with_a_clear_error(tmp_path, override, message):
    _fake_npz(tmp_path / "bad.npz", (28, 28), **override)
    with pytest.raises(ReadError, match=message) as error:
        import_medmnist("breastmnist", source=str(tmp_path / "bad.npz"), out=tmp_path / "out")
    assert "bad.npz" in str(error.value) and "What to do" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_wrong_inputs_are_refused(tmp_path):
    with pytest.raises(UnknownNameError, match="breastmnist"):
        import_medmnist("breastmnst", source="x.npz", out=tmp_path / "out")
    with pytest.raises(ReadError, match="does not exist"):
        import_medmnist("breastmnist", source=str(tmp_path / "missing.npz"), out=tmp_path / "out")
    (tmp_path / "not.npz").write_text("hello")
    with pytest.raises(ReadError, match=r"not a readable \.npz"):
        import_medmnist("breastmnist", source=str(tmp_path / "not.npz"), out=tmp_path / "out")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        import_medmnist("breastmnist", source=str(tmp_path / "not.npz"), out=tmp_path / "busy")
    with pytest.raises(ConfigError, match="limit"):
        import_medmnist("breastmnist", source=str(tmp_path / "not.npz"), out=tmp_path / "out", limit=0)


def test_registry_lists_2d_and_3d_sets_with_size_variants():
    names = set(MEDMNIST_SETS.names())
    assert {
        "breastmnist",
        "pneumoniamnist",
        "breastmnist_224",
        "adrenalmnist3d",
        "adrenalmnist3d_64",
        "organmnist3d",
        "nodulemnist3d",
        "fracturemnist3d",
        "vesselmnist3d",
        "synapsemnist3d",
    } <= names
    assert MEDMNIST_SETS.get("chestmnist").task == "multi-label"
    assert MEDMNIST_SETS.get("breastmnist").classes == ("malignant", "normal or benign")
    assert MEDMNIST_SETS.get("pneumoniamnist").classes == ("normal", "pneumonia")


def test_download_from_a_local_http_server_and_offline_error(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    arrays = _fake_npz(served / "breastmnist.npz", (28, 28))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/breastmnist.npz"
        summary = import_medmnist("breastmnist", source=url, out=tmp_path / "out", limit=1)
        assert summary.counts == {"train": 1, "val": 1, "test": 1}
        ds = pydicom.dcmread(tmp_path / "out" / "breastmnist-train-00000" / "breastmnist-train-00000.dcm")
        np.testing.assert_array_equal(ds.pixel_array, arrays["train_images"][0])
        port = server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ReadError, match="could not download") as error:
        import_medmnist("breastmnist", source=f"http://127.0.0.1:{port}/breastmnist.npz", out=tmp_path / "again")
    assert "--source" in str(error.value)


def _shared_data() -> Path:
    return Path(os.environ.get("MEDTL_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


@pytest.mark.shared_data
def test_real_breastmnist_file(tmp_path):
    source = _shared_data() / "medmnist" / "breastmnist.npz"
    if not source.is_file():
        pytest.skip(f"shared data not found at {source} (set MEDTL_SHARED_DATA to the data folder)")
    summary = import_medmnist("breastmnist", source=str(source), out=tmp_path / "out", limit=20)
    assert summary.counts == {"train": 20, "val": 20, "test": 20}
    with np.load(source) as npz:
        images, labels = npz["train_images"], npz["train_labels"]
        assert len(images) == 546 and len(npz["val_images"]) == 78 and len(npz["test_images"]) == 156
    rows = [r for r in _rows(tmp_path / "out") if r["split"] == "train"]
    assert [int(r["label"]) for r in rows] == labels[:20, 0].tolist()
    ds = pydicom.dcmread(tmp_path / "out" / rows[7]["patient_id"] / f"{rows[7]['patient_id']}.dcm")
    assert ds.Modality == "US" and ds.SOPClassUID == UltrasoundImageStorage
    np.testing.assert_array_equal(ds.pixel_array, images[7])


# -- task.json: every import declares its task ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("breastmnist", TaskDeclaration(kind="binary", classes=["0", "1"], positive_class="1")),
        ("octmnist", TaskDeclaration(kind="multiclass", classes=["0", "1", "2", "3"])),
        ("retinamnist", TaskDeclaration(kind="ordinal", classes=["0", "1", "2", "3", "4"])),
    ],
)
def test_every_import_writes_its_task_declaration(tmp_path, name, expected):
    spec = MEDMNIST_SETS.get(name)
    labels = {split: (np.arange(n) % len(spec.classes)).reshape(-1, 1).astype(np.uint8) for split, n in
              {"train": 10, "val": 5, "test": 5}.items()}  # fmt: skip
    images = {f"{split}_images": np.zeros((len(v), 28, 28, *((3,) if spec.channels == 3 else ())), np.uint8)
              for split, v in labels.items()}  # fmt: skip
    np.savez_compressed(tmp_path / "x.npz", **images, **{f"{s}_labels": v for s, v in labels.items()})
    summary = import_medmnist(name, source=str(tmp_path / "x.npz"), out=tmp_path / "out")
    assert read_json(TaskDeclaration, tmp_path / "out" / "task.json") == expected == summary.task
    assert f"--task-json {tmp_path / 'out' / 'task.json'}" in summary.describe()
    # what `medtl ingest --task-json` checks before reading any scan: the declaration fits the labels
    checked = check_with_labels_file(
        declare_task(None, file=tmp_path / "out" / "task.json"), tmp_path / "out" / "labels.csv"
    )
    assert checked == expected


def test_a_limited_import_declares_only_the_classes_it_holds(tmp_path):
    labels = np.array([[0], [1], [2], [4], [1]], np.uint8)  # no grade 3
    arrays = {f"{split}_images": np.zeros((5, 28, 28, 3), np.uint8) for split in SPLIT_SIZES}
    arrays.update({f"{split}_labels": labels for split in SPLIT_SIZES})
    np.savez_compressed(tmp_path / "r.npz", **arrays)
    summary = import_medmnist("retinamnist", source=str(tmp_path / "r.npz"), out=tmp_path / "out", limit=4)
    assert summary.task == TaskDeclaration(kind="ordinal", classes=["0", "1", "2", "4"])  # order kept, 3 left out
    assert "no image of class(es) 3" in summary.describe()


def test_chestmnist_is_imported_as_multi_label(tmp_path):
    rng = np.random.default_rng(3)
    findings = MEDMNIST_SETS.get("chestmnist").classes
    assert len(findings) == 14 and findings[0] == "atelectasis" and findings[-1] == "hernia"
    assert all(re.fullmatch(LABEL_PATTERN, name) and name == name.lower() for name in findings)
    arrays = {}
    for split, n in SPLIT_SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        matrix = (rng.uniform(size=(n, 14)) < 0.3).astype(np.uint8)
        matrix[0] = 0  # one image with no finding
        matrix[1, :] = 1  # and one with all of them
        arrays[f"{split}_labels"] = matrix
    np.savez_compressed(tmp_path / "chest.npz", **arrays)
    summary = import_medmnist("chestmnist", source=str(tmp_path / "chest.npz"), out=tmp_path / "out")
    rows = _rows(tmp_path / "out")
    validate_rows(LabelRow, rows)
    for row in rows:
        split, index = row["split"], int(row["patient_id"].rsplit("-", 1)[1])
        present = [findings[k] for k in np.flatnonzero(arrays[f"{split}_labels"][index])]
        assert row["label"] == ("|".join(present) or "none")
    assert rows[0]["label"] == "none" and rows[1]["label"].split("|") == list(findings)
    declared = read_json(TaskDeclaration, tmp_path / "out" / "task.json")
    assert declared.kind == "multilabel" and declared.classes == list(findings)
    train = arrays["train_labels"]
    assert summary.label_counts["train"] == {
        **{name: int(train[:, k].sum()) for k, name in enumerate(findings) if train[:, k].sum()},
        **({"none": int((train.sum(axis=1) == 0).sum())}),
    }
    assert "multi-label" in summary.describe()


def test_chestmnist_labels_must_have_one_column_per_finding(tmp_path):
    _fake_npz(tmp_path / "c.npz", (28, 28), train_labels=np.zeros((5, 1), np.uint8))
    with pytest.raises(ReadError, match=r"one 0/1 column per finding \(N, 14\)"):
        import_medmnist("chestmnist", source=str(tmp_path / "c.npz"), out=tmp_path / "out")
