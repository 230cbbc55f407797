"""PNG metadata: find and drop the chunks that can carry text, before an image is embedded in a report.

Why: a PNG's tEXt/zTXt/iTXt chunks (and eXIf, tIME) can hold a patient name, an original path or a timestamp that
nobody sees when looking at the picture. The report embeds thumbnails produced elsewhere, so it removes those chunks
itself rather than trust every producer; its own plots are written without them in the first place.
"""

from __future__ import annotations

import struct
import zlib

from medtl.errors import ContractProblem, DataContractError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
METADATA_CHUNKS = TEXT_CHUNKS | {b"eXIf", b"tIME"}


def chunks(data: bytes, *, where: str = "image") -> list[tuple[bytes, bytes]]:
    """(type, payload) for every chunk; a DataContractError when the bytes are not a well-formed PNG."""
    if not data.startswith(SIGNATURE):
        raise _bad(where, "is not a PNG (the signature is missing)")
    found, offset = [], len(SIGNATURE)
    while offset < len(data):
        if offset + 8 > len(data):
            raise _bad(where, "ends inside a chunk header")
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise _bad(where, "ends inside a chunk")
        payload = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : end])
        if zlib.crc32(kind + payload) != crc:
            raise _bad(where, f"has a corrupt {kind.decode('latin-1')!r} chunk")
        found.append((kind, payload))
        offset = end
        if kind == b"IEND":
            break
    if not found or found[-1][0] != b"IEND":
        raise _bad(where, "has no IEND chunk")
    return found


def text_chunk_types(data: bytes) -> list[str]:
    """The names of the text-carrying chunks present (empty for a clean image)."""
    return [kind.decode("latin-1") for kind, _ in chunks(data) if kind in TEXT_CHUNKS]


def strip_metadata(data: bytes, *, where: str = "image") -> bytes:
    """The same image without text, EXIF and time chunks; pixels and colour information are untouched."""
    out = bytearray(SIGNATURE)
    for kind, payload in chunks(data, where=where):
        if kind in METADATA_CHUNKS:
            continue
        out += struct.pack(">I4s", len(payload), kind) + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return bytes(out)


def _bad(where: str, rule: str) -> DataContractError:
    return DataContractError(
        "report image",
        [ContractProblem(where, f"the image {rule}")],
        fix="produce thumbnails as PNG bytes (e.g. matplotlib or Pillow, saved as PNG)",
    )
