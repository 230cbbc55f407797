"""NIfTI reader: nibabel, with the qform/sform check, canonical orientation, scaling, and a rule for 4D.

Rules: the sform is used when its code is set (nibabel's convention), else the qform; when both are set and
disagree by more than 0.01 mm anywhere in the field of view, the scan is flagged so a person looks at it. 4D images
are split into one volume per time point (or other 4th-axis entry); 5D and more are refused. A dcm2niix-style
sidecar JSON next to the file supplies the modality and scanner facts NIfTI does not carry.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medtl.errors import ReadError
from medtl.io.geometry import to_canonical
from medtl.io.limits import DEFAULT_LIMITS, HEADER_ALLOWANCE_BYTES, MIB, IngestLimits, inflate
from medtl.io.scan import Scan

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MAX_VOLUMES = 2000
_MISMATCH_MM = 0.01
_LABEL_MAP_MAX_VALUES = 16
_NIFTI1_HEADER, _NIFTI2_HEADER = 348, 540
_CHUNK = 64 * 1024
_TRAILING_SLACK = 1 * MIB
_MAX_SIDECAR_BYTES = 1 * MIB


def is_nifti_bytes(head: bytes) -> bool:
    """Sniff the header (gzip or plain) for a NIfTI-1/2 magic; file names are not trusted."""
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 600)
        except zlib.error:
            return False
    return len(head) >= 348 and (head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00"))


def sidecar_for(path: Path) -> dict[str, Any]:
    name = path.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem
    candidate = path.with_name(stem + ".json")
    if not candidate.is_file():
        return {}
    try:
        if candidate.stat().st_size > _MAX_SIDECAR_BYTES:  # a dcm2niix sidecar is a few KB; anything huge is not one
            return {}
        data = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_nifti(path: Path, limits: IngestLimits = DEFAULT_LIMITS) -> tuple[list[Scan], str]:
    """Decode a NIfTI file into canonical-RAS volumes; returns the scans and the file's SHA-256.

    The header's dims x itemsize are checked against `limits` before the image is read, and a .nii.gz is
    decompressed under a budget of what that header declares: a gzip bomb stops at the budget, not at its end.
    """
    try:
        limits.check_file(path.stat().st_size)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        image = _load(data, limits)
    except (ReadError, MemoryError):
        raise
    except Exception as error:  # corrupt or foreign file: quarantined by the caller
        raise ReadError(f"unreadable NIfTI ({type(error).__name__})") from None
    affine, affine_source, flags = _choose_affine(image)
    try:
        array = np.asarray(image.dataobj, dtype=np.float32)  # the array proxy applies scl_slope / scl_inter
    except Exception as error:
        raise ReadError(f"NIfTI pixel data could not be read ({type(error).__name__})") from None
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim > 4 and all(size == 1 for size in array.shape[4:]):
        array = array.reshape(array.shape[:4])
    if array.ndim > 4:
        raise ReadError(f"NIfTI with {array.ndim} dimensions {array.shape}: only 3D and 4D images are supported")
    volumes = [array] if array.ndim == 3 else [array[..., t] for t in range(array.shape[3])]
    if len(volumes) > MAX_VOLUMES:
        raise ReadError(f"NIfTI 4th axis has {len(volumes)} entries (more than {MAX_VOLUMES}): not a volume series")
    sidecar = sidecar_for(path)
    slope, inter = image.header.get_slope_inter()
    integral = np.issubdtype(image.get_data_dtype(), np.integer) and all(
        value is None or float(value).is_integer() for value in (slope, inter)
    )
    scans = []
    for index, volume in enumerate(volumes):
        canonical, canonical_affine, codes = to_canonical(volume, affine)
        scan = Scan(
            array=np.asfortranarray(canonical, dtype=np.float32),
            affine=canonical_affine,
            image_kind="volume",
            orientation=codes,
            volume_index=index,
            volumes_in_series=len(volumes),
        )
        for name in flags:
            scan.flag(name)
        if len(volumes) > 1:
            scan.flag("split_4d")
        if canonical.shape[2] == 1:
            scan.flag("single_slice")
        if _looks_like_label_map(canonical):
            scan.flag("possible_label_map")
        scan.meta.update(
            integral=integral,
            modality=str(sidecar.get("Modality", "OT")).upper(),
            sop_class=None,
            transfer_syntax=None,
            decoder="nibabel",
            manufacturer=sidecar.get("Manufacturer"),
            manufacturer_model=sidecar.get("ManufacturersModelName"),
            body_part=sidecar.get("BodyPartExamined"),
            affine_source=affine_source,
        )
        scans.append(scan)
    return scans, digest


def _load(data: bytes, limits: IngestLimits) -> nib.Nifti1Image:
    gzipped = data[:2] == b"\x1f\x8b"
    head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:_CHUNK], _NIFTI2_HEADER) if gzipped else data
    version2 = head[4:8] in (b"n+2\x00", b"ni2\x00")
    header_class = nib.Nifti2Header if version2 else nib.Nifti1Header
    size = _NIFTI2_HEADER if version2 else _NIFTI1_HEADER
    if len(head) < size:
        raise ReadError("the NIfTI header is cut short")
    header = header_class(binaryblock=bytes(head[:size]), check=False)
    shape = [int(value) for value in header.get_data_shape()]
    itemsize = header.get_data_dtype().itemsize
    declared = limits.check_image(shape=(*shape, 1, 1)[: max(2, len(shape))], bytes_per_sample=itemsize,
                                  what="the NIfTI header")  # fmt: skip
    offset = int(header.get_data_offset())
    if offset < 0 or offset > HEADER_ALLOWANCE_BYTES:
        raise ReadError("the NIfTI header places the image data outside the file's plausible range")
    if gzipped:
        # what the header declares, plus a little slack for padding; a stream that goes on is not this image
        budget = offset + declared + _TRAILING_SLACK
        data = inflate(
            data,
            budget=budget,
            wbits=16 + zlib.MAX_WBITS,
            what="the gzip-compressed NIfTI file",
            budget_text="more than its header declares",
            hint=" (a compressed stream that goes on past its image is refused; re-export the file)",
        )
    image_class = nib.Nifti2Image if version2 else nib.Nifti1Image
    return image_class.from_bytes(data)


def _choose_affine(image: nib.Nifti1Image) -> tuple[np.ndarray, str, list[str]]:
    sform, sform_code = image.get_sform(coded=True)
    qform, qform_code = image.get_qform(coded=True)
    flags: list[str] = []
    if sform is not None and qform is not None and _max_disagreement(sform, qform, image.shape[:3]) > _MISMATCH_MM:
        flags.append("qform_sform_mismatch")
    if sform is not None and int(sform_code) > 0:
        return sform, "sform", flags
    if qform is not None and int(qform_code) > 0:
        return qform, "qform", flags
    flags.append("no_affine_code")
    return image.header.get_base_affine(), "base", flags


def _max_disagreement(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where the two affines put the corners of the volume."""
    extent = [max(int(size) - 1, 0) for size in (*shape, 1, 1, 1)[:3]]
    corners = np.array([[x, y, z, 1.0] for x in (0, extent[0]) for y in (0, extent[1]) for z in (0, extent[2])])
    return float(np.max(np.linalg.norm((corners @ a.T - corners @ b.T)[:, :3], axis=1)))


def _looks_like_label_map(array: np.ndarray) -> bool:
    sample = array[:: max(1, array.shape[0] // 32), :: max(1, array.shape[1] // 32)]
    if not np.all(np.equal(np.mod(sample, 1), 0)):
        return False
    return len(np.unique(sample)) <= _LABEL_MAP_MAX_VALUES and len(np.unique(array)) <= _LABEL_MAP_MAX_VALUES
