"""Hostile input files for ingest tests: size lies, decompression bombs, planted identifiers. Small on disk."""

from __future__ import annotations

import gzip
import os
import signal
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from support.dicom_factory import ct_series, ct_slice

# Identifiers a leak test looks for anywhere in logs, stderr and error messages.
PLANTED = {
    "name": "ZQXNAME^PLANTED",
    "patient_id": "ZQXPID778899",
    "study_uid": "1.2.826.0.1.3680043.8.498.99887766",
    "series_uid": "1.2.826.0.1.3680043.8.498.99887755",
    "bad_date": "ZQXDATE31",
    "label_cell": "ZQXLABEL!?",
}


def good_series(folder: Path, *, patient_id: str = "GOOD01", slices: int = 4) -> list[Path]:
    stored = np.random.default_rng(3).integers(0, 2000, (slices, 16, 16)).astype(np.uint16)
    return ct_series(folder, stored, patient_id=patient_id)


def size_lie_dicom(path: Path, *, rows: int = 60000, columns: int = 60000) -> Path:
    """A small CT slice whose header claims rows x columns pixels (the pixel data is 64 x 64)."""
    ds = ct_slice(path, np.zeros((64, 64), np.uint16), position=(0, 0, 0), series_uid=pydicom.uid.generate_uid(),
                  patient_id="LIAR01")  # fmt: skip
    ds.Rows, ds.Columns = rows, columns
    ds.save_as(path, enforce_file_format=True)
    return path


def rle_frame(n_bytes: int, segments: int = 2) -> bytes:
    """One RLE Lossless frame whose segments each expand to about n_bytes of zeros (128 bytes per 2 input bytes)."""
    segment = b"\x81\x00" * max(1, n_bytes // 128)
    offsets = [64 + k * len(segment) for k in range(segments)]
    header = struct.pack("<16L", segments, *offsets, *([0] * (15 - segments)))
    return header + segment * segments


def rle_bomb_dicom(path: Path, *, rows: int = 16384, columns: int = 16384, frames: int = 64) -> Path:
    """RLE Lossless CT that declares rows x columns x frames 16-bit pixels: a few KB that would decode to GiBs."""
    ds = ct_slice(path, np.zeros((8, 8), np.uint16), position=(0, 0, 0), series_uid=pydicom.uid.generate_uid(),
                  patient_id="RLE01")  # fmt: skip
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([rle_frame(4096)] * 2)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg_size_lie_dicom(path: Path, *, height: int = 60000, width: int = 60000) -> Path:
    """JPEG baseline CT slice: the header says 64 x 64 8-bit, the frame's SOF0 marker says height x width."""
    ds = ct_slice(path, np.zeros((64, 64), np.uint16), position=(0, 0, 0), series_uid=pydicom.uid.generate_uid(),
                  patient_id="JPEG01")  # fmt: skip
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8" + sof + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return path


def deflate_bomb_dicom(path: Path, *, inflated_bytes: int) -> Path:
    """Deflated Explicit VR LE CT slice carrying a private element of `inflated_bytes` zeros (tiny once deflated)."""
    ds = ct_slice(path, np.zeros((8, 8), np.uint16), position=(0, 0, 0), series_uid=pydicom.uid.generate_uid(),
                  patient_id="DEFL01")  # fmt: skip
    block = ds.private_block(0x0009, "MEDTL TEST", create=True)
    block.add_new(0x10, "OB", bytes(inflated_bytes))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def nifti_bytes(shape: tuple[int, ...], dtype=np.int16) -> bytes:
    image = nib.Nifti1Image(np.zeros(shape, dtype=dtype), np.eye(4))
    return image.to_bytes()


def nifti_header_lie(path: Path, *, shape: tuple[int, ...] = (4096, 4096, 4096)) -> Path:
    """A .nii of a few hundred bytes whose header declares `shape` int16 voxels (128 GiB by default)."""
    small = nib.Nifti1Image(np.zeros((2, 2, 2), dtype=np.int16), np.eye(4))
    small.header.set_data_shape(shape)
    data = small.header.binaryblock + b"\x00" * 4 + b"\x00" * 16
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def gzip_nifti_bomb(path: Path, *, extra_gib: float = 1.5) -> Path:
    """A valid small .nii.gz followed by gzip members of zeros that expand to extra_gib GiB (about 1.6 MB on disk)."""
    member = gzip.compress(bytes(64 << 20), compresslevel=9)
    count = int(extra_gib * 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(gzip.compress(nifti_bytes((16, 16, 8))))
        for _ in range(count):
            out.write(member)
    return path


def crashing_on_patient(read_plan: Callable[..., Any], patient_id: str) -> Callable[..., Any]:
    """`read_plan` that kills its process for the series of `patient_id`, as a crash inside a C decoder does."""

    def crashing(plan: Any, *args: Any, **kwargs: Any) -> Any:
        if plan.headers[0].patient_id == patient_id:
            os.kill(os.getpid(), signal.SIGSEGV)
        return read_plan(plan, *args, **kwargs)

    return crashing
