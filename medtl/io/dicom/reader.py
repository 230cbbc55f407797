"""Turn a ScanPlan into decoded scans: stacked slices, Enhanced multi-frame volumes, or planar images."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from pydicom.dataset import Dataset

from medtl.errors import ReadError
from medtl.io.dicom.budget import header_pixel_bytes
from medtl.io.dicom.decode import DecodedObject, decode_object, fast_description, fast_stored
from medtl.io.dicom.grouping import ScanPlan
from medtl.io.dicom.headers import DicomHeader
from medtl.io.dicom.integral import integer_dtype, physical_integers
from medtl.io.dicom.sop import uid_of
from medtl.io.geometry import (
    LPS_TO_RAS,
    StackGeometry,
    affine_to_canonical,
    analyse_stack,
    canonical_buffer,
    lps_affine,
    orientation,
    projected_positions,
)
from medtl.io.limits import DEFAULT_LIMITS, IngestLimits
from medtl.io.scan import Scan
from medtl.timing import timed


@dataclass
class FileOutcome:
    header: DicomHeader
    sha256: str | None
    error: str | None = None  # set when this file could not be used
    code: str | None = None  # the reason code for the report (ReadError.reason_code); None = decode_failed


@dataclass
class PlanResult:
    scans: list[Scan]
    files: list[FileOutcome] = field(default_factory=list)


@dataclass
class _Plane:
    pixels: np.ndarray
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    spacing: tuple[float, float]
    order_key: tuple = ()


Prefetched = dict[Path, tuple[bytes | None, str]]


def read_plan(
    plan: ScanPlan, prefetched: Prefetched | None = None, limits: IngestLimits = DEFAULT_LIMITS
) -> PlanResult:
    """Decode every file of the plan; files that fail are reported, the rest still form a scan when they can.

    `prefetched` maps a path to (its bytes, or None when they were not kept, and the hash taken for the cache key).
    Kept bytes are decoded as they are and released slice by slice; a file read again must still have that hash,
    or it changed under our feet and is refused rather than cached under the wrong key. Declared sizes are
    checked against `limits` (each object, and the whole scan) before the volume is allocated.
    """
    expected = prefetched if prefetched is not None else {}
    limits.check_series(sum(header_pixel_bytes(h, limits) for h in plan.headers), n_files=len(plan.headers))
    if plan.handling == "planar":
        return _read_planar(plan, expected, limits)
    if plan.handling == "enhanced":
        return _read_enhanced(plan, expected, limits)
    return _read_stack(plan, expected, limits)


def _decode_one(
    header: DicomHeader, expected: Prefetched, limits: IngestLimits, *, fast: bool = True
) -> tuple[DecodedObject | None, FileOutcome]:
    data, digest = expected.pop(header.path, (None, None))
    try:
        obj = decode_object(header.path, header, data=data, sha256=digest, limits=limits, fast=fast)
    except ReadError as error:
        return None, FileOutcome(header, digest, error.what, error.reason_code)
    if digest is not None and digest != obj.sha256:
        return None, FileOutcome(header, obj.sha256, "the file changed while ingest was reading it")
    return obj, FileOutcome(header, obj.sha256)


def _decode_all(
    plan: ScanPlan, expected: Prefetched, limits: IngestLimits
) -> tuple[list[tuple[DicomHeader, DecodedObject]], list[FileOutcome]]:
    # An Enhanced object's geometry and rescale live in its functional groups: it needs the whole dataset, which
    # the fast paths do not build, even when it holds a single frame.
    fast = plan.handling != "enhanced"
    decoded, outcomes = [], []
    for header in plan.headers:
        obj, outcome = _decode_one(header, expected, limits, fast=fast)
        outcomes.append(outcome)
        if obj is not None:
            decoded.append((header, obj))
    return decoded, outcomes


def _read_stack(plan: ScanPlan, expected: Prefetched, limits: IngestLimits) -> PlanResult:
    """Geometry from the headers first, then each slice decoded straight into the canonical volume.

    Only one slice and the finished volume are in memory at a time: no list of planes, no stacked copy, no
    reoriented copy. Slices that fail to decode are dropped afterwards and the geometry is recomputed.
    """
    geometry, ordered, affine, shape = stack_geometry(plan.headers)
    filled = _fill_integers(ordered, expected, limits, affine, shape) or _fill(ordered, expected, limits, affine, shape)
    volume, codes, outcomes, kept, objects = filled
    if not kept:
        return PlanResult([], outcomes)
    flags = list(geometry.flags)
    if len(kept) < len(ordered):
        volume, affine, flags = _drop_slices(volume, affine, ordered, kept)
        flags.append("unreadable_slices")
    scan = Scan(array=volume, affine=affine_to_canonical(affine, shape), image_kind="volume", orientation=codes)
    scan.volume_index, scan.volumes_in_series = plan.volume_index, plan.volumes_in_series
    scan.meta["tilt_degrees"] = round(geometry.tilt_degrees, 3)
    for name in (*flags, *plan.flags):
        scan.flag(name)
    used = [ordered[k] for k in kept]
    _describe(scan, plan, used[0], objects)
    if used[0].pixel_spacing is None:
        scan.flag("no_pixel_spacing")
    if len({h.pixel_spacing for h in used}) > 1:
        scan.flag("inconsistent_pixel_spacing")
    return PlanResult([scan], outcomes)


_Filled = tuple[np.ndarray, str, list[FileOutcome], list[int], list[DecodedObject]]


def _fill(
    ordered: list[DicomHeader], expected: Prefetched, limits: IngestLimits, affine: np.ndarray, shape: tuple[int, ...]
) -> _Filled:
    """Float path: each slice decoded (any transfer syntax) and rescaled on its own, written into a float32 volume."""
    volume, writable, codes = canonical_buffer(affine, shape)  # type: ignore[arg-type]
    outcomes: list[FileOutcome] = []
    kept: list[int] = []
    objects: list[DecodedObject] = []
    for k, header in enumerate(ordered):
        obj, outcome = _decode_one(header, expected, limits)
        outcomes.append(outcome)
        if obj is None:
            continue
        frame = obj.frames[0]
        if frame.shape != (shape[1], shape[0]):
            outcome.error = f"slice size {frame.shape} differs from the series ({shape[1]}, {shape[0]})"
            continue
        with timed("assemble"):
            writable[:, :, k] = frame.T
        kept.append(k)
        obj.frames = frame[:0]  # keep the decoded metadata, drop the pixels
        objects.append(obj)
    return volume, codes, outcomes, kept, objects


def _fill_integers(
    ordered: list[DicomHeader], expected: Prefetched, limits: IngestLimits, affine: np.ndarray, shape: tuple[int, ...]
) -> _Filled | None:
    """Integer path (integral.py): stored values straight into an integer volume, rescaled once as a whole.

    Any surprise (a slice the fast path cannot read, a size that differs, values beyond 16 bits) answers None
    before anything is consumed, and the float path reads the series from the same bytes and reports each file.
    """
    dtype = integer_dtype(ordered, expected)
    if dtype is None:
        return None
    volume, writable, codes = canonical_buffer(affine, shape, dtype)  # type: ignore[arg-type]
    decoders = []
    for k, header in enumerate(ordered):
        data, _ = expected[header.path]
        try:
            header_pixel_bytes(header, limits)
        except ReadError:
            return None
        found = fast_stored(header, data, limits)  # type: ignore[arg-type]
        if found is None or found[0].shape != (shape[1], shape[0]) or found[0].dtype != dtype:
            return None
        with timed("assemble"):
            writable[:, :, k] = found[0].T
        decoders.append(found[1])
    with timed("rescale"):
        physical = physical_integers(volume, ordered[0])
    if physical is None:
        return None
    outcomes, objects = [], []
    for header, decoder in zip(ordered, decoders, strict=True):
        _, digest = expected.pop(header.path)
        outcomes.append(FileOutcome(header, digest))
        objects.append(fast_description(header, digest, decoder))
    return physical, codes, outcomes, list(range(len(ordered))), objects


class PlacedSlice(Protocol):
    """What a stack's geometry is computed from: a DicomHeader has it, and so has the smaller record that ingest
    sends a worker to foresee the spec (ingest/expected.py)."""

    @property
    def position(self) -> tuple[float, float, float] | None: ...
    @property
    def orientation(self) -> tuple[float, float, float, float, float, float] | None: ...
    @property
    def pixel_spacing(self) -> tuple[float, float] | None: ...
    @property
    def columns(self) -> int | None: ...
    @property
    def rows(self) -> int | None: ...


S = TypeVar("S", bound=PlacedSlice)


def stack_geometry(headers: list[S]) -> tuple[StackGeometry, list[S], np.ndarray, tuple[int, int, int]]:
    """A stack's slice order, its headers in that order, its RAS affine and its shape in source order: all from
    the headers, before any pixel is read (ingest also foresees the dataset's default spec from them)."""
    geometry = analyse_stack([h.position for h in headers], headers[0].orientation)  # type: ignore[misc]
    ordered = [headers[i] for i in geometry.order]
    affine = _stack_affine(ordered, geometry.step)
    return geometry, ordered, affine, (ordered[0].columns or 0, ordered[0].rows or 0, len(ordered))


def _stack_affine(ordered: Sequence[PlacedSlice], step: np.ndarray) -> np.ndarray:
    first = ordered[0]
    spacing = first.pixel_spacing or (1.0, 1.0)
    return LPS_TO_RAS @ lps_affine(first.orientation, spacing, first.position, step)  # type: ignore[arg-type]


def _drop_slices(
    volume: np.ndarray, affine: np.ndarray, ordered: list[DicomHeader], kept: list[int]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Remove the slots of slices that failed; positions of the rest decide the new geometry (gaps show)."""
    transform = orientation(affine)
    axis, direction = int(transform[2, 0]), int(transform[2, 1])
    n = len(ordered)
    slots = [k if direction > 0 else n - 1 - k for k in kept]
    reduced = np.asfortranarray(np.take(volume, sorted(slots), axis=axis))
    remaining = [ordered[k] for k in kept]
    geometry = analyse_stack([h.position for h in remaining], remaining[0].orientation)  # type: ignore[misc]
    return reduced, _stack_affine(remaining, geometry.step), list(geometry.flags)


def _assemble_volume(planes: list[_Plane]) -> Scan:
    """Stack already-decoded planes (Enhanced multi-frame objects, whose frames arrive together)."""
    geometry = analyse_stack([p.position for p in planes], planes[0].orientation)
    ordered = [planes[i] for i in geometry.order]
    shapes = {p.pixels.shape for p in ordered}
    if len(shapes) > 1:
        raise ReadError(f"slices of one volume have different sizes {sorted(shapes)}")
    affine = LPS_TO_RAS @ lps_affine(ordered[0].orientation, ordered[0].spacing, ordered[0].position, geometry.step)
    rows, columns = ordered[0].pixels.shape
    volume, writable, codes = canonical_buffer(affine, (columns, rows, len(ordered)))
    for k, plane in enumerate(ordered):
        writable[:, :, k] = plane.pixels.T
    scan = Scan(
        array=volume,
        affine=affine_to_canonical(affine, (columns, rows, len(ordered))),
        image_kind="volume",
        orientation=codes,
    )
    for name in geometry.flags:
        scan.flag(name)
    scan.meta["tilt_degrees"] = round(geometry.tilt_degrees, 3)
    return scan


def _read_planar(plan: ScanPlan, expected: Prefetched, limits: IngestLimits) -> PlanResult:
    decoded, outcomes = _decode_all(plan, expected, limits)
    if not decoded:
        return PlanResult([], outcomes)
    header, obj = decoded[0]
    if obj.frames.shape[0] != 1:
        outcomes[0].error = f"expected one frame, found {obj.frames.shape[0]}"
        return PlanResult([], outcomes)
    spacing = header.pixel_spacing or header.imager_pixel_spacing
    affine = np.eye(4)
    affine[0, 0], affine[1, 1] = spacing if spacing else (1.0, 1.0)
    orientation = "\\".join(header.patient_orientation) or "image"
    scan = Scan(array=np.ascontiguousarray(obj.frames[0]), affine=affine, image_kind="image2d", orientation=orientation)
    if header.pixel_spacing is None:
        scan.flag("imager_pixel_spacing" if header.imager_pixel_spacing else "no_pixel_spacing")
    _describe(scan, plan, header, [obj])
    return PlanResult([scan], outcomes)


def _read_enhanced(plan: ScanPlan, expected: Prefetched, limits: IngestLimits) -> PlanResult:
    decoded, outcomes = _decode_all(plan, expected, limits)
    if not decoded:
        return PlanResult([], outcomes)
    header, obj = decoded[0]
    try:
        planes = _enhanced_planes(obj)
    except ReadError as error:
        outcomes[0].error, outcomes[0].code = error.what, error.reason_code
        return PlanResult([], outcomes)
    volumes = _split_enhanced(planes)
    scans = []
    for index, members in enumerate(volumes):
        scan = _assemble_volume(members)
        scan.volume_index, scan.volumes_in_series = index, len(volumes)
        if len(volumes) > 1:
            scan.flag("split_repeated_positions")
        _describe(scan, plan, header, [obj])
        scans.append(scan)
    return PlanResult(scans, outcomes)


def _enhanced_planes(obj: DecodedObject) -> list[_Plane]:
    ds = obj.dataset
    shared = _item(ds.get("SharedFunctionalGroupsSequence"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != obj.frames.shape[0]:
        raise ReadError("Enhanced object: the per-frame functional groups do not match the number of frames")
    planes = []
    for index, group in enumerate(per_frame):
        position = _functional(group, shared, "PlanePositionSequence", "ImagePositionPatient")
        orientation = _functional(group, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _functional(group, shared, "PixelMeasuresSequence", "PixelSpacing")
        if position is None or orientation is None:
            raise ReadError(f"Enhanced object: frame {index + 1} has no plane position or orientation")
        content = _item(group.get("FrameContentSequence"))
        key = (
            int(content.get("TemporalPositionIndex", 0) or 0) if content is not None else 0,
            str(content.get("StackID", "")) if content is not None else "",
            index,
        )
        planes.append(
            _Plane(
                obj.frames[index],
                tuple(float(v) for v in position),  # type: ignore[arg-type]
                tuple(round(float(v), 6) for v in orientation),
                tuple(float(v) for v in spacing) if spacing is not None else (1.0, 1.0),  # type: ignore[arg-type]
                key,
            )
        )
    return planes


def _split_enhanced(planes: list[_Plane]) -> list[list[_Plane]]:
    """Frames of one temporal position / stack / orientation form a volume; repeats split further by frame order."""
    groups: dict[tuple, list[_Plane]] = defaultdict(list)
    for plane in planes:
        groups[(plane.order_key[0], plane.order_key[1], tuple(round(v, 3) for v in plane.orientation))].append(plane)
    volumes: list[list[_Plane]] = []
    for key in sorted(groups):
        members = groups[key]
        along = projected_positions([p.position for p in members], members[0].orientation)
        rounded = np.round(along / 0.01).astype(np.int64)
        positions, counts = np.unique(rounded, return_counts=True)
        if len(set(counts.tolist())) > 1:
            raise ReadError("Enhanced object: some frame positions repeat and others do not")
        repeats = int(counts[0])
        slots = {pos: [p for p, r in zip(members, rounded, strict=True) if r == pos] for pos in positions}
        for volume in range(repeats):
            volumes.append([sorted(slots[pos], key=lambda p: p.order_key)[volume] for pos in positions])
    return volumes


def _item(sequence) -> Dataset | None:
    return sequence[0] if sequence else None


def _functional(group: Dataset, shared: Dataset | None, sequence: str, keyword: str):
    for source in (group, shared):
        item = _item(source.get(sequence)) if source is not None else None
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _describe(scan: Scan, plan: ScanPlan, header: DicomHeader, objects: list[DecodedObject]) -> None:
    """Non-identifying facts for the manifest and the subgroup analysis."""
    for obj in objects:
        for name in obj.flags:
            scan.flag(name)
    scan.meta.update(
        integral=all(obj.integral for obj in objects),
        modality=header.modality or plan.modality,
        sop_class=uid_of(header.sop_class_uid).name if header.sop_class_uid else None,
        transfer_syntax=objects[0].transfer_syntax,
        decoder="+".join(sorted({obj.decoder for obj in objects})),
        manufacturer=header.manufacturer,
        manufacturer_model=header.manufacturer_model,
        body_part=header.body_part,
        sex=header.sex if header.sex in ("F", "M", "O") else None,
        age_band=age_band(header.patient_age, header.birth_date, header.study_date),
    )


def age_band(patient_age: str | None, birth_date: str | None, study_date: str | None) -> str | None:
    """Decade bands (90+ pooled, as HIPAA Safe Harbor requires); exact ages and dates never leave ingest."""
    years = _age_years(patient_age, birth_date, study_date)
    if years is None or years < 0:
        return None
    if years >= 90:
        return "90+"
    low = (years // 10) * 10
    return f"{low}-{low + 9}"


def _age_years(patient_age: str | None, birth_date: str | None, study_date: str | None) -> int | None:
    if patient_age and len(patient_age) == 4 and patient_age[:3].isdigit():
        value, unit = int(patient_age[:3]), patient_age[3].upper()
        return {"Y": value, "M": value // 12, "W": value // 52, "D": value // 365}.get(unit)
    if birth_date and study_date and len(birth_date) >= 8 and len(study_date) >= 8:
        try:
            b = (int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
            s = (int(study_date[:4]), int(study_date[4:6]), int(study_date[6:8]))
        except ValueError:
            return None
        return s[0] - b[0] - (1 if (s[1], s[2]) < (b[1], b[2]) else 0)
    return None
