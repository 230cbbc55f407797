"""File-writing helpers shared by the dataset builders (synthetic cohorts, public-dataset importers).

Why one place: both builders promise byte-identical output for identical input, which rests on details that are
easy to get wrong — UIDs derived from content instead of randomness or the clock, gzip headers without a timestamp,
and NIfTI scaling written exactly as given (nibabel resets scl_slope/scl_inter when it saves an integer array).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medtl.errors import ConfigError

NIFTI_VOX_OFFSET = 352  # 348-byte header + 4-byte extension flag: where a single-file .nii's data starts


def derived_uid(*parts: object) -> str:
    """A valid DICOM UID that depends only on `parts`: the same inputs always give the same UID."""
    return generate_uid(entropy_srcs=["medtl", *(str(part) for part in parts)])


def check_empty_dir(out: Path, *, what: str) -> None:
    """Refuse an output folder that already holds files: builders never overwrite or mix with other data."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"cannot write {what}: the output path is a file, not a folder",
            where=str(out),
            fix="pass the name of a new (or empty) folder",
        )
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(
            f"cannot write {what}: the output folder is not empty",
            where=str(out),
            fix="pass a new or empty folder; nothing was written, and existing files are never overwritten or mixed",
        )


@contextmanager
def staged_output(out: Path, *, what: str) -> Iterator[Path]:
    """Build in a hidden sibling folder and move it to `out` only on success: no half-written dataset is left behind.

    `out` must be new or empty; on failure it is left as it was found (an empty folder that existed stays).
    """
    out = Path(out)
    check_empty_dir(out, what=what)
    existed = out.is_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        yield work
        if existed:
            out.rmdir()
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def new_dicom(sop_class_uid: str, sop_instance_uid: str, *, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """An empty dataset with SOP common attributes and matching file meta, so `dcmread` works without force."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


def save_dicom(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    qform: np.ndarray | None = None,
    slope: float = 1.0,
    inter: float = 0.0,
) -> None:
    """Write a gzipped NIfTI-1 with sform = `affine`, qform = `qform` (default: the same), both code 1 (scanner).

    The array is stored as given (its dtype, Fortran order = (i, j, k) voxel order) with scl_slope/scl_inter as
    given, so `get_fdata()` returns `data * slope + inter`. The gzip header has no timestamp or file name.
    """
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    header.set_sform(np.asarray(affine, dtype=float), code=1)
    header.set_qform(np.asarray(affine if qform is None else qform, dtype=float), code=1)
    header.set_slope_inter(slope, inter)
    header.set_xyzt_units("mm", "sec")
    header["vox_offset"] = NIFTI_VOX_OFFSET
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as stream:
        header.write_to(stream)
        stream.write(np.asarray(data).tobytes(order="F"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.getvalue())


def write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Plain CSV with '\\n' line ends on every platform (byte-identical output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
