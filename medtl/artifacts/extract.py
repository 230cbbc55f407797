"""Pull every piece of text out of the file formats an artifact may hold, with a location for each piece.

Why a separate reader per format: PHI hides in places a plain `grep` misses (a PNG's compressed iTXt chunk, a Parquet
file's schema metadata, YAML comments, HTML entities, a base64 image inside HTML, a safetensors header). Nothing
here executes content: JSON and YAML go through safe parsers, the binary formats are read by their headers only.
"""

from __future__ import annotations

import base64
import binascii
import csv
import html
import io
import json
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

_MAX_INFLATE = 64 << 20  # a compressed PNG text chunk may not expand beyond this (zip bombs)
_MAX_VALUES = 2_000_000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PIXEL_CHUNKS = frozenset(
    {
        b"IHDR",
        b"PLTE",
        b"IDAT",
        b"IEND",
        b"tRNS",
        b"gAMA",
        b"cHRM",
        b"sRGB",
        b"pHYs",
        b"sBIT",
        b"bKGD",
        b"hIST",
        b"tIME",
        b"sPLT",
        b"acTL",
        b"fcTL",
        b"fdAT",
        b"cICP",
        b"mDCV",
        b"cLLI",
    }
)
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{4,}")
_DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+)(?:;[\w=.-]+)*;base64,([A-Za-z0-9+/=\s]+)")


@dataclass(frozen=True)
class Segment:
    """One piece of text and where it sits in its file (JSON path, line, table cell, PNG chunk ...)."""

    location: str
    text: str


class FormatProblem(Exception):
    """The file cannot be checked safely: kind is 'unreadable', 'unsupported_format' or 'pickle'."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FormatProblem("unreadable", f"not UTF-8 text (byte {error.start})") from None


def _walk(value: Any, location: str) -> Iterator[Segment]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield Segment(f"{location} (key)", str(key))
            yield from _walk(item, f"{location}.{key}")
    elif isinstance(value, (list, tuple)):
        for number, item in enumerate(value):
            yield from _walk(item, f"{location}[{number}]")
    elif isinstance(value, str):
        yield Segment(location, value)
    elif isinstance(value, int) and not isinstance(value, bool):
        yield Segment(location, str(value))  # ids and dates stored as numbers
    elif value is not None and not isinstance(value, (bool, float)):
        yield Segment(location, str(value))  # YAML dates and other scalars


def _lines(text: str) -> Iterator[Segment]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield Segment(f"line {number}", line)


def _json(data: bytes) -> list[Segment]:
    try:
        document = json.loads(_decode(data))
    except json.JSONDecodeError as error:
        raise FormatProblem("unreadable", f"not valid JSON (line {error.lineno})") from None
    return list(_walk(document, "$"))


def _jsonl(data: bytes) -> list[Segment]:
    segments: list[Segment] = []
    for number, line in enumerate(_decode(data).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            segments.extend(_walk(json.loads(line), f"line {number}: $"))
        except json.JSONDecodeError:
            raise FormatProblem("unreadable", f"line {number} is not valid JSON") from None
    return segments


def _yaml(data: bytes) -> list[Segment]:
    text = _decode(data)
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        raise FormatProblem("unreadable", f"not valid YAML for safe_load: {type(error).__name__}") from None
    # Raw lines catch comments (which parsing drops); parsed values catch escaped or folded text.
    segments = list(_lines(text))
    parsed = (s for number, doc in enumerate(documents) for s in _walk(doc, f"document {number}: $"))
    for count, segment in enumerate(parsed):
        if count > _MAX_VALUES:  # aliases can make a small YAML file expand enormously
            raise FormatProblem("unreadable", f"more than {_MAX_VALUES} values (YAML alias expansion?)")
        if segment.text not in text:
            segments.append(segment)
    return segments


def _csv(data: bytes, delimiter: str) -> list[Segment]:
    text = _decode(data)
    segments: list[Segment] = []
    try:
        for row_number, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), start=1):
            segments.extend(Segment(f"row {row_number}, column {col}", cell) for col, cell in enumerate(row, 1))
    except csv.Error:
        return list(_lines(text))
    return segments


def _html(data: bytes) -> list[Segment]:
    text = _decode(data)
    segments: list[Segment] = []
    for segment in _lines(text):
        segments.append(segment)
        unescaped = html.unescape(segment.text)
        if unescaped != segment.text:
            segments.append(Segment(f"{segment.location} (entities decoded)", unescaped))
    for number, match in enumerate(_DATA_URI.finditer(text), start=1):
        media, payload = match.group(1).lower(), re.sub(r"\s", "", match.group(2))
        try:
            embedded = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise FormatProblem("unreadable", f"embedded data URI #{number} is not valid base64") from None
        where = f"embedded {media} #{number}"
        if media == "image/png":
            segments.extend(Segment(f"{where}, {s.location}", s.text) for s in _png(embedded))
        elif media.startswith("text/") or media in ("image/svg+xml", "application/json"):
            segments.extend(Segment(f"{where}, {s.location}", s.text) for s in _lines(_decode(embedded)))
        else:
            raise FormatProblem("unsupported_format", f"{where} cannot be checked; embed PNG or SVG instead")
    return segments


def _inflate(data: bytes, where: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, _MAX_INFLATE)
    except zlib.error:
        raise FormatProblem("unreadable", f"{where}: corrupt compressed text") from None
    if inflater.unconsumed_tail:
        raise FormatProblem("unreadable", f"{where}: compressed text expands beyond {_MAX_INFLATE >> 20} MiB")
    return out


def _png(data: bytes) -> list[Segment]:
    if not data.startswith(_PNG_SIGNATURE):
        raise FormatProblem("unreadable", "not a PNG file (bad signature)")
    segments: list[Segment] = []
    position, number = len(_PNG_SIGNATURE), 0
    while position < len(data):
        if position + 8 > len(data):
            raise FormatProblem("unreadable", "truncated PNG chunk header")
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if len(body) != length or position + 12 + length > len(data):
            raise FormatProblem("unreadable", f"truncated PNG chunk {kind!r}")
        number += 1
        name = kind.decode("latin-1")
        where = f"chunk {number} {name}"
        if kind == b"tEXt":
            keyword, _, text = body.partition(b"\0")
            segments += [Segment(f"{where} keyword", keyword.decode("latin-1")), Segment(where, text.decode("latin-1"))]
        elif kind == b"zTXt":
            keyword, _, rest = body.partition(b"\0")
            segments.append(Segment(f"{where} keyword", keyword.decode("latin-1")))
            segments.append(Segment(where, _inflate(rest[1:], where).decode("latin-1")))
        elif kind == b"iTXt":
            keyword, _, rest = body.partition(b"\0")
            compressed = rest[:1] == b"\x01"
            language, _, rest = rest[2:].partition(b"\0")
            translated, _, text = rest.partition(b"\0")
            raw = _inflate(text, where) if compressed else text
            for part_name, part in (("keyword", keyword), ("language", language), ("translated keyword", translated)):
                segments.append(Segment(f"{where} {part_name}", part.decode("utf-8", errors="replace")))
            segments.append(Segment(where, raw.decode("utf-8", errors="replace")))
        elif kind == b"iCCP":
            segments.append(Segment(f"{where} profile name", body.partition(b"\0")[0].decode("latin-1")))
        elif kind not in _PNG_PIXEL_CHUNKS:  # eXIf and private chunks: any readable text in them
            segments += [Segment(where, run.decode("ascii")) for run in _PRINTABLE_RUN.findall(body)]
        position += 12 + length
        if kind == b"IEND":
            break
    return segments


def _string_like(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _string_like(kind.value_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _string_like(kind.value_type)
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_temporal(kind)  # a birth date stored as a date or timestamp column
    )


def _flat_values(column: pa.ChunkedArray) -> list[str]:
    values = column
    while (
        pa.types.is_list(values.type)
        or pa.types.is_large_list(values.type)
        or (pa.types.is_fixed_size_list(values.type))
    ):
        values = pa.chunked_array([chunk.flatten() for chunk in values.chunks], type=values.type.value_type)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    texts = []
    for value in values.unique().to_pylist():
        if isinstance(value, bytes):
            texts.append(value.decode("utf-8", errors="replace"))
        elif value is not None:
            texts.append(str(value))
    return texts


def _parquet(path: Path) -> list[Segment]:
    try:
        handle = pq.ParquetFile(path)
        schema = handle.schema_arrow
    except (pa.ArrowException, OSError) as error:
        raise FormatProblem("unreadable", f"not a readable Parquet file ({type(error).__name__})") from None
    segments: list[Segment] = []
    for key, value in (schema.metadata or {}).items():
        label = key.decode("utf-8", errors="replace")
        segments.append(Segment("schema metadata (key)", label))
        segments.append(Segment(f"schema metadata {label!r}", value.decode("utf-8", errors="replace")))
    columns = []
    for field in schema:
        segments.append(Segment("column name", field.name))
        if _string_like(field.type):
            columns.append(field.name)
    if columns:
        table = handle.read(columns=columns)
        for name in columns:
            segments.extend(Segment(f"column {name!r}", value) for value in _flat_values(table.column(name)))
    return segments


def _safetensors(data_head: bytes, size: int) -> list[Segment]:
    if len(data_head) < 8:
        raise FormatProblem("unreadable", "not a safetensors file (too short)")
    (length,) = struct.unpack("<Q", data_head[:8])
    if length > size - 8 or length > 100 << 20:
        raise FormatProblem("unreadable", "not a safetensors file (bad header length)")
    header_bytes = data_head[8 : 8 + length]
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FormatProblem("unreadable", "safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise FormatProblem("unreadable", "safetensors header is not a JSON object")
    segments = [Segment("tensor name", str(name)) for name in header if name != "__metadata__"]
    segments.extend(_walk(header.get("__metadata__") or {}, "__metadata__"))
    return segments


def _npy(path: Path) -> list[Segment]:
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(handle)
        except ValueError as error:
            raise FormatProblem("unreadable", f"not a readable .npy file ({error})") from None
    if dtype.hasobject:
        raise FormatProblem("pickle", "the .npy array holds Python objects, which load only through pickle")
    return [Segment("dtype field name", name) for name in (dtype.names or ())]


def read_head(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) == 8:
            (length,) = struct.unpack("<Q", head)
            head += handle.read(min(length, size))
    return head


def extract_segments(path: Path) -> list[Segment]:
    """Every text in the file, with its location; FormatProblem when the file cannot be checked safely."""
    suffix = path.suffix.lower()
    size = path.stat().st_size
    if suffix == ".safetensors":
        return _safetensors(read_head(path, size), size)
    if suffix == ".npy":
        return _npy(path)
    if suffix == ".parquet":
        return _parquet(path)
    data = path.read_bytes()
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise FormatProblem("pickle", "the content is a Python pickle, whatever its extension")
    if data[:4] == b"PK\x03\x04":
        raise FormatProblem("pickle", "the content is a zip archive (e.g. a torch.save file), not the declared format")
    if suffix == ".png":
        return _png(data)
    if suffix == ".json":
        return _json(data)
    if suffix == ".jsonl":
        return _jsonl(data)
    if suffix in (".yaml", ".yml"):
        return _yaml(data)
    if suffix in (".csv", ".tsv"):
        return _csv(data, "\t" if suffix == ".tsv" else ",")
    if suffix in (".html", ".htm", ".md"):  # Markdown may carry HTML, entities and data-URI images too
        return _html(data)
    if suffix == ".txt":
        return list(_lines(_decode(data)))
    raise FormatProblem("unsupported_format", f"the format {suffix or '(none)'} cannot be checked for PHI")
