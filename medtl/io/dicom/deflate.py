"""Deflated Explicit VR Little Endian files, inflated under a byte budget before pydicom sees them.

Why: pydicom inflates a deflated dataset in one `zlib.decompress` call, with no limit, even when asked to stop
before the pixels; a small deflated file can therefore expand to gigabytes while only its header is being read.
Here the file meta information is read first; a deflated body is inflated chunk by chunk under the image budget
and handed to pydicom as the equivalent Explicit VR Little Endian file. Other files are left to pydicom as they are.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from pydicom.filebase import DicomFileLike
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from medtl.io.limits import inflate


def inflated_source(handle: BinaryIO, *, budget: int) -> io.BytesIO | None:
    """An Explicit VR LE copy of a deflated file (read from `handle`), or None (and `handle` rewound) otherwise.

    Raises LimitExceededError when the body inflates past `budget` bytes, ReadError when it is corrupt.
    """
    start = handle.tell()
    try:
        read_preamble(handle, True)
        meta = _read_file_meta_info(handle)
        deflated = meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # not our concern here: pydicom reports a damaged meta group when it reads the file
        deflated = False
    if not deflated:
        handle.seek(start)
        return None
    body = inflate(handle.read(), budget=budget, wbits=-15, what="the deflated DICOM dataset")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(DicomFileLike(out), meta, enforce_standard=False)
    out.write(body)
    out.seek(0)
    return out


def mark_deflated(ds) -> None:
    """Restore the original transfer syntax on a dataset read from an inflated copy (pixels are native either way)."""
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
