"""Size limits for hostile input: what a header may declare, and how far compressed data may expand.

Why: a 19 KB DICOM can declare 60000 x 60000 pixels, and a few megabytes of gzip can expand to gigabytes. Readers
check declared sizes against these limits before allocating anything, and decompress under a byte budget, so one
such file is quarantined (with the limit's name and how to raise it) instead of stopping the run. The defaults
admit real CT / MR / X-ray data with room to spare: a whole-body CT of 2000 slices of 512 x 512 int16 is 1 GiB.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from medtl.errors import LimitExceededError, ReadError

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
# Room for what is not pixel data (headers, functional groups, NIfTI extensions) in a decompression budget.
HEADER_ALLOWANCE_BYTES = 64 * MIB
_CHUNK = 1 * MIB


class IngestLimits(BaseModel):
    """The limits one ingest run enforces; every reader receives the same instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_file_bytes: int = Field(
        3 * GIB, gt=0, description="largest input file read at all (checked from the file system before opening)"
    )
    max_image_bytes: int = Field(
        2 * GIB,
        gt=0,
        description="stored pixel bytes one DICOM object or NIfTI file declares (rows x columns x frames x samples "
        "x bytes per sample; NIfTI dims x itemsize); also the budget for decompressing it",
    )
    max_frame_pixels: int = Field(
        16384 * 16384, gt=0, description="pixels of one 2D frame (rows x columns): no real CT/MR/X-ray comes near"
    )
    max_series_bytes: int = Field(
        4 * GIB, gt=0, description="stored pixel bytes of all slices that form one scan (summed over files)"
    )

    def check_image(self, *, shape: Iterable[int], bytes_per_sample: int, what: str) -> int:
        """Declared pixel bytes of one object, or LimitExceededError; `shape` is (rows, columns, *more axes)."""
        dims = [max(0, int(size)) for size in shape]
        pixels = 1
        for size in dims:
            pixels *= size
        frame = dims[0] * dims[1] if len(dims) >= 2 else pixels
        if frame > self.max_frame_pixels:
            raise LimitExceededError(
                f"{what} declares a frame of {frame:,} pixels, over the limit of {self.max_frame_pixels:,}"
                + _named("max_frame_pixels", "--max-frame-megapixels"),
                reason_code="image_too_large",
                fix=_raise_hint("max_frame_pixels", "--max-frame-megapixels"),
            )
        total = pixels * max(1, int(bytes_per_sample))
        if total > self.max_image_bytes:
            raise LimitExceededError(
                f"{what} declares {format_bytes(total)} of pixel data, over the limit of "
                f"{format_bytes(self.max_image_bytes)} per image" + _named("max_image_bytes", "--max-image-gb"),
                reason_code="image_too_large",
                fix=_raise_hint("max_image_bytes", "--max-image-gb"),
            )
        return total

    def check_series(self, total: int, *, n_files: int) -> None:
        if total > self.max_series_bytes:
            raise LimitExceededError(
                f"the {n_files} files of one scan declare {format_bytes(total)} of pixel data together, over the "
                f"limit of {format_bytes(self.max_series_bytes)} per scan"
                + _named("max_series_bytes", "--max-series-gb"),
                reason_code="series_too_large",
                fix=_raise_hint("max_series_bytes", "--max-series-gb"),
            )

    def check_file(self, size: int) -> None:
        if size > self.max_file_bytes:
            raise LimitExceededError(
                f"the file is {format_bytes(size)}, over the limit of {format_bytes(self.max_file_bytes)} per file"
                + _named("max_file_bytes", "--max-file-gb"),
                reason_code="file_too_large",
                fix=_raise_hint("max_file_bytes", "--max-file-gb"),
            )

    @property
    def decompression_budget(self) -> int:
        """Bytes one compressed object may expand to: its largest allowed pixel data plus its headers."""
        return self.max_image_bytes + HEADER_ALLOWANCE_BYTES


DEFAULT_LIMITS = IngestLimits()


def limits_from_options(
    *,
    file_gb: float | None = None,
    image_gb: float | None = None,
    series_gb: float | None = None,
    frame_megapixels: float | None = None,
) -> IngestLimits:
    """The CLI's units (GiB, megapixels) to an IngestLimits; an option left out keeps its default."""
    values = {
        "max_file_bytes": None if file_gb is None else int(file_gb * GIB),
        "max_image_bytes": None if image_gb is None else int(image_gb * GIB),
        "max_series_bytes": None if series_gb is None else int(series_gb * GIB),
        "max_frame_pixels": None if frame_megapixels is None else int(frame_megapixels * 1_000_000),
    }
    return IngestLimits(**{key: value for key, value in values.items() if value is not None})


def inflate(
    data: bytes | memoryview,
    *,
    budget: int,
    wbits: int,
    what: str,
    budget_text: str = "the budget for one image",
    hint: str | None = None,
) -> bytes:
    """Decompress a zlib / raw-deflate / gzip stream, stopping as soon as the output would pass `budget` bytes.

    Works chunk by chunk with `max_length`, so a bomb costs at most `budget` bytes of memory, never its full size.
    Gzip members are read one after another; other bytes after the end of the stream are ignored (as gzip readers
    do); a truncated stream raises ReadError.
    """
    engine = zlib.decompressobj(wbits)
    parts: list[bytes] = []
    produced = 0
    view = memoryview(data)
    position = 0
    pending = b""
    while not engine.eof:
        if pending:
            source, pending = pending, b""
        else:
            source = bytes(view[position : position + _CHUNK])
            position += len(source)
        try:
            chunk = engine.decompress(source, budget - produced + 1)
        except zlib.error:
            raise ReadError(f"{what}: the compressed data is corrupt") from None
        produced += len(chunk)
        if produced > budget:
            raise LimitExceededError(
                f"{what} decompresses to more than {format_bytes(budget)}, {budget_text}"
                + (hint if hint is not None else _named("max_image_bytes", "--max-image-gb")),
                reason_code="decompression_limit",
                fix=_raise_hint("max_image_bytes", "--max-image-gb"),
            )
        parts.append(chunk)
        pending = engine.unconsumed_tail
        if engine.eof and wbits > zlib.MAX_WBITS and engine.unused_data[:2] == b"\x1f\x8b":
            pending = engine.unused_data  # the next member of a multi-member gzip file, same budget
            engine = zlib.decompressobj(wbits)
        elif not source and not chunk and not pending:
            break  # input exhausted and zlib has nothing more to give
    if not engine.eof:
        raise ReadError(f"{what}: the compressed data ends early")
    return b"".join(parts)


def format_bytes(count: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def _named(field: str, option: str) -> str:
    """The part of every limit message that says which limit and how to raise it (the report shows only this)."""
    return f" (ingest limit {field}; raise it with `medtl ingest {option}` if the file is genuine)"


def _raise_hint(field: str, option: str) -> str:
    return (
        f"if the file is genuine, raise the limit: `medtl ingest {option} ...` or IngestLimits({field}=...) in "
        "Python (README, Ingest limits)"
    )
