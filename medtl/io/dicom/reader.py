"""Turn a ScanPlan into decoded scans: stacked slices, Enhanced multi-frame volumes, or planar images."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medtl.errors import ReadError
from medtl.io.dicom.decode import DecodedObject, decode_object
from medtl.io.dicom.grouping import ScanPlan
from medtl.io.dicom.headers import DicomHeader
from medtl.io.geometry import LPS_TO_RAS, analyse_stack, lps_affine, projected_positions, to_canonical
from medtl.io.scan import Scan


@dataclass
class FileOutcome:
    header: DicomHeader
    sha256: str | None
    error: str | None = None  # set when this file could not be used


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


def read_plan(plan: ScanPlan, blobs: dict[Path, bytes] | None = None) -> PlanResult:
    """Decode every file of the plan; files that fail are reported, the rest still form a scan when they can.

    `blobs` holds file contents the caller has already read (to hash them), so each file is read once.
    """
    blobs = blobs or {}
    if plan.handling == "planar":
        return _read_planar(plan, blobs)
    if plan.handling == "enhanced":
        return _read_enhanced(plan, blobs)
    return _read_stack(plan, blobs)


def _decode_all(
    plan: ScanPlan, blobs: dict[Path, bytes]
) -> tuple[list[tuple[DicomHeader, DecodedObject]], list[FileOutcome]]:
    decoded, outcomes = [], []
    for header in plan.headers:
        try:
            obj = decode_object(header.path, blobs.get(header.path))
        except ReadError as error:
            outcomes.append(FileOutcome(header, None, error.what))
            continue
        decoded.append((header, obj))
        outcomes.append(FileOutcome(header, obj.sha256))
    return decoded, outcomes


def _read_stack(plan: ScanPlan, blobs: dict[Path, bytes]) -> PlanResult:
    decoded, outcomes = _decode_all(plan, blobs)
    if not decoded:
        return PlanResult([], outcomes)
    planes = []
    for header, obj in decoded:
        spacing = header.pixel_spacing or (1.0, 1.0)
        planes.append(_Plane(obj.frames[0], header.position, header.orientation, spacing))  # type: ignore[arg-type]
    scan = _assemble_volume(planes)
    scan.volume_index, scan.volumes_in_series = plan.volume_index, plan.volumes_in_series
    if any(o.error for o in outcomes):
        scan.flag("unreadable_slices")
    first_header = decoded[0][0]
    _describe(scan, plan, first_header, [obj for _, obj in decoded])
    for name in plan.flags:
        scan.flag(name)
    if first_header.pixel_spacing is None:
        scan.flag("no_pixel_spacing")
    if len({h.pixel_spacing for h, _ in decoded}) > 1:
        scan.flag("inconsistent_pixel_spacing")
    return PlanResult([scan], outcomes)


def _assemble_volume(planes: list[_Plane]) -> Scan:
    geometry = analyse_stack([p.position for p in planes], planes[0].orientation)
    ordered = [planes[i] for i in geometry.order]
    shapes = {p.pixels.shape for p in ordered}
    if len(shapes) > 1:
        raise ReadError(f"slices of one volume have different sizes {sorted(shapes)}")
    # (k, rows, columns) -> (i = column, j = row, k = slice)
    stacked = np.stack([p.pixels for p in ordered]).transpose(2, 1, 0)
    affine = LPS_TO_RAS @ lps_affine(ordered[0].orientation, ordered[0].spacing, ordered[0].position, geometry.step)
    array, affine, codes = to_canonical(np.ascontiguousarray(stacked, dtype=np.float32), affine)
    scan = Scan(array=array, affine=affine, image_kind="volume", orientation=codes)
    for name in geometry.flags:
        scan.flag(name)
    scan.meta["slice_spacing"] = geometry.spacing
    scan.meta["tilt_degrees"] = round(geometry.tilt_degrees, 3)
    return scan


def _read_planar(plan: ScanPlan, blobs: dict[Path, bytes]) -> PlanResult:
    decoded, outcomes = _decode_all(plan, blobs)
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


def _read_enhanced(plan: ScanPlan, blobs: dict[Path, bytes]) -> PlanResult:
    decoded, outcomes = _decode_all(plan, blobs)
    if not decoded:
        return PlanResult([], outcomes)
    header, obj = decoded[0]
    try:
        planes = _enhanced_planes(obj)
    except ReadError as error:
        outcomes[0].error = error.what
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
        modality=header.modality or plan.modality,
        sop_class=UID(header.sop_class_uid).name if header.sop_class_uid else None,
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
