"""A synthetic DICOM archive at scale: thousands of small CT and MR series for measuring ingest, not for training.

Why apart from `make_cohort`: a cohort is built to be learnable (a phantom with a finding, labels, NIfTI copies),
which costs time per patient; measuring how ingest scales needs many series quickly, in the mix a PACS export
really holds — CT and MR, native and compressed transfer syntaxes, and a few files ingest must refuse. Every series
is drawn from its own random stream (seed, series number), so the archive is byte-identical for a seed whatever
the number of writer processes, and a larger archive begins with the series of a smaller one.

Layout written by `make_archive(OUT, series=N, seed=S)`:

    OUT/dicom/P<patient>/ST<study>/SE<series>/<instance>.dcm   the archive (ingest this folder)
    OUT/dicom/notes/README.txt                                  a stray text file (skipped: not_an_image)
    OUT/expected.csv   every file under dicom/: relative_path, status, reason_code, series, modality,
                       transfer_syntax (the outcome ingest must report for it)
    OUT/archive.json   the parameters, the counts by status and by transfer syntax

Bad files each form a series of their own, so their outcome does not depend on their neighbours; they are spread
evenly (a share `bad_fraction` of the series) and come in turn: a slice cut inside its pixel data (quarantined,
decode_failed), a slice without pixel data (quarantined, decode_failed: "the object has no pixel data"), and a
Grayscale Softcopy Presentation State (skipped, presentation_state).
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)

from medtl.datasets.synth.dicom_series import ds_number
from medtl.datasets.synth.phantom import HU_MAX, HU_MIN
from medtl.datasets.writing import derived_uid, dicom_bytes, new_dicom, staged_output, write_csv
from medtl.errors import ConfigError

SOURCE = "dicom"
EXPECTED = "expected.csv"
SUMMARY = "archive.json"
COLUMNS = ("relative_path", "status", "reason_code", "series", "modality", "transfer_syntax")
# Transfer syntaxes in turn, series by series: 4 in 10 explicit little endian, 2 implicit, 2 RLE, 1 JPEG-LS and
# 1 JPEG 2000 (all lossless). Native encodings dominate real exports; compressed ones come from archives that
# compress on store. In turn rather than drawn, so that any ten consecutive series hold all five.
SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    ExplicitVRLittleEndian,
    RLELossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    ExplicitVRLittleEndian,
)
BAD_KINDS = ("truncated", "no_pixel_data", "presentation_state")
_BAD_OUTCOME = {
    "truncated": ("quarantined", "decode_failed"),
    "no_pixel_data": ("quarantined", "decode_failed"),
    "presentation_state": ("skipped", "presentation_state"),
}
SERIES_PER_STUDY = 3
STUDIES_PER_PATIENT = 2


@dataclass(frozen=True)
class ArchiveOptions:
    series: int
    seed: int = 0
    slices: tuple[int, int] = (8, 24)  # inclusive range per series
    matrix: int = 64
    bad_fraction: float = 0.02  # share of series that are one bad file instead

    def check(self) -> None:
        low, high = self.slices
        if self.series < 1 or not 1 <= low <= high or not 32 <= self.matrix <= 1024:
            raise ConfigError(
                "the archive needs >= 1 series, 1 <= min slices <= max slices and a matrix of 32 to 1024",
                where="synth-archive options",
                fix="e.g. --series 1000 --slices 8 --max-slices 24 --matrix 64",
            )
        if not 0.0 <= self.bad_fraction <= 0.5:
            raise ConfigError("--bad-fraction must be between 0 and 0.5", where="synth-archive options",
                              fix="e.g. --bad-fraction 0.02 (2% of series are a bad file)")  # fmt: skip


@dataclass(frozen=True)
class ArchiveSummary:
    out: Path
    series: int
    files: int
    counts: dict[str, int]
    syntaxes: dict[str, int]

    def describe(self) -> str:
        by_status = ", ".join(f"{name} {count}" for name, count in sorted(self.counts.items()))
        return (
            f"wrote {self.files} files in {self.series} series under {self.out / SOURCE} (expected: {by_status})\n"
            f"expected outcome of every file: {self.out / EXPECTED}; ingest with: medtl ingest {self.out / SOURCE} "
            f"--out DATASET --allow-development-key"
        )


def make_archive(out: Path, options: ArchiveOptions, *, workers: int = 1) -> ArchiveSummary:
    """Write the archive into the new (or empty) folder `out`; `workers` processes write series in parallel."""
    options.check()
    rows: list[dict[str, str]] = []
    with staged_output(Path(out), what="a synthetic archive") as work:
        root = work / SOURCE
        numbers = range(options.series)
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                written = list(pool.map(_write_series, [(root, options, n) for n in numbers], chunksize=8))
        else:
            written = [_write_series((root, options, n)) for n in numbers]
        for series_rows in written:
            rows.extend(series_rows)
        note = root / "notes" / "README.txt"
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text("export notes: not an image\n", encoding="utf-8")
        rows.append(_row("notes/README.txt", "skipped", "not_an_image", -1, "", ""))
        rows.sort(key=lambda row: row["relative_path"])
        write_csv(work / EXPECTED, COLUMNS, rows)
        counts = dict(Counter(row["status"] for row in rows))
        syntaxes = dict(Counter(UID(row["transfer_syntax"]).name for row in rows if row["transfer_syntax"]))
        summary = {"seed": options.seed, "series": options.series, "slices": list(options.slices),
                   "matrix": options.matrix, "bad_fraction": options.bad_fraction, "files": len(rows),
                   "counts": counts, "transfer_syntaxes": syntaxes}  # fmt: skip
        (work / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return ArchiveSummary(Path(out), options.series, len(rows), counts, syntaxes)


# -- one series ------------------------------------------------------------------------------------------------------


def _row(relative: str, status: str, code: str, series: int, modality: str, syntax: str) -> dict[str, str]:
    return {"relative_path": relative, "status": status, "reason_code": code, "series": str(series),
            "modality": modality, "transfer_syntax": syntax}  # fmt: skip


def _write_series(args: tuple[Path, ArchiveOptions, int]) -> list[dict[str, str]]:
    """Write series `number` (everything drawn from its own stream) and return its expected rows."""
    root, options, number = args
    rng = np.random.default_rng([options.seed, number])
    patient = number // (SERIES_PER_STUDY * STUDIES_PER_PATIENT)
    study = number // SERIES_PER_STUDY
    folder = f"P{patient:05d}/ST{study:06d}/SE{number:06d}"
    ident = _Ident(options.seed, patient, study, number)
    modality = "CT" if rng.random() < 0.6 else "MR"
    syntax = SYNTAXES[number % len(SYNTAXES)]
    bad_before = int(number * options.bad_fraction)  # evenly spaced bad series, the kinds in turn
    if int((number + 1) * options.bad_fraction) > bad_before:
        kind = BAD_KINDS[bad_before % len(BAD_KINDS)]
        relative = f"{folder}/0001.dcm"
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(_bad_file(kind, ident, modality, options.matrix, rng))
        status, code = _BAD_OUTCOME[kind]
        return [_row(relative, status, code, number, modality, ExplicitVRLittleEndian)]
    n_slices = int(rng.integers(options.slices[0], options.slices[1] + 1))
    volume = _volume(rng, n_slices, options.matrix, modality)
    spacing = float(rng.choice([0.6, 0.8, 1.0])) if modality == "CT" else float(rng.choice([0.9, 1.2]))
    thickness = float(rng.choice([1.0, 2.5, 5.0]))
    (root / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n_slices):
        ds = _image(ident, modality, k, volume[k], spacing=spacing, thickness=thickness)
        relative = f"{folder}/{k + 1:04d}.dcm"
        (root / relative).write_bytes(_encoded(ds, syntax))
        rows.append(_row(relative, "ingested", "", number, modality, syntax))
    return rows


@dataclass(frozen=True)
class _Ident:
    seed: int
    patient: int
    study: int
    series: int

    def uid(self, *parts: object) -> str:
        # one joined part: derived_uid concatenates its parts, so ("sop", 1, 16) and ("sop", 11, 6) would collide
        return derived_uid("archive/" + "/".join(str(part) for part in (self.seed, *parts)))


def _volume(rng: np.random.Generator, slices: int, matrix: int, modality: str) -> np.ndarray:
    """An ellipse of tissue in air or background with noise: cheap, and not trivially compressible."""
    y, x = np.mgrid[:matrix, :matrix]
    centre = matrix / 2 + rng.normal(0, matrix / 20, 2)
    radii = matrix * rng.uniform(0.3, 0.45, 2)
    inside = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 <= 1
    if modality == "CT":
        base = np.where(inside, rng.integers(20, 60), -1000)
        noise = rng.normal(0, 12, (slices, matrix, matrix))
    else:
        base = np.where(inside, rng.integers(300, 900), 5)
        noise = np.abs(rng.normal(0, 20, (slices, matrix, matrix)))
    return np.rint(base[None] + noise).astype(np.int32)


def _image(ident: _Ident, modality: str, k: int, values: np.ndarray, *, spacing: float, thickness: float) -> Dataset:
    storage = CTImageStorage if modality == "CT" else MRImageStorage
    ds = new_dicom(storage, ident.uid("sop", ident.series, k))
    ds.PatientName = f"ARCHIVE^P{ident.patient:05d}"
    ds.PatientID = f"ARC{ident.seed}-{ident.patient:05d}"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F" if ident.patient % 2 else "M"
    ds.StudyInstanceUID = ident.uid("study", ident.study)
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = str(ident.study)
    ds.AccessionNumber = f"ACC{ident.study:07d}"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = ident.uid("series", ident.series)
    ds.SeriesNumber = ident.series % SERIES_PER_STUDY + 1
    ds.Modality = modality
    ds.Manufacturer = "MEDTL ARCHIVE"
    ds.BodyPartExamined = "CHEST" if modality == "CT" else "HEAD"
    ds.FrameOfReferenceUID = ident.uid("frame", ident.study)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = ["0", "0", ds_number(k * thickness)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [ds_number(spacing)] * 2
    ds.SliceThickness = ds_number(thickness)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if modality == "CT" else 12
    ds.HighBit = ds.BitsStored - 1
    if modality == "CT":  # stored = HU + 1024, unsigned, as many scanners write it
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        # clipped to what the encoding holds: noise below -1024 HU would wrap around to 64,511 HU
        stored = (np.clip(values, HU_MIN, HU_MAX) + 1024).astype("<u2")
    else:
        ds.PixelRepresentation = 0
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "NONE", "2D"
        ds.EchoTime, ds.RepetitionTime = "20", "500"
        stored = np.clip(values, 0, 4095).astype("<u2")
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


def _encoded(ds: Dataset, syntax: str) -> bytes:
    if syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif syntax != ExplicitVRLittleEndian:
        with _quiet_encoders():
            ds.compress(UID(syntax), generate_instance_uid=False)  # lossless: the same instance
    return dicom_bytes(ds)


class _quiet_encoders:
    """The openjpeg plugin logs one INFO line per encoded tile; thousands of series would flood the console."""

    def __enter__(self) -> None:
        self.log = logging.getLogger("openjpeg")
        self.level = self.log.level
        self.log.setLevel(max(self.level, logging.WARNING))

    def __exit__(self, *exc: object) -> None:
        self.log.setLevel(self.level)


def _bad_file(kind: str, ident: _Ident, modality: str, matrix: int, rng: np.random.Generator) -> bytes:
    values = _volume(rng, 1, matrix, modality)[0]
    ds = _image(ident, modality, 0, values, spacing=1.0, thickness=1.0)
    if kind == "truncated":  # cut inside the pixel data: the header still parses
        data = dicom_bytes(ds)
        return data[: len(data) - matrix * matrix]
    if kind == "no_pixel_data":
        del ds.PixelData
        return dicom_bytes(ds)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = GrayscaleSoftcopyPresentationStateStorage
    del ds.PixelData
    return dicom_bytes(ds)


def iter_expected(out: Path) -> Iterator[dict[str, str]]:
    """The rows of OUT/expected.csv."""
    with open(Path(out) / EXPECTED, newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)
