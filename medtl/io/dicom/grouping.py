"""Group DICOM headers into scans: one series can hold several volumes, and some files belong to none.

A SeriesInstanceUID is not a volume. Echoes, temporal positions, several orientations or repeated positions (a 4D
fMRI series stores every time point at the same 15 positions) must be split apart before stacking, or the result
is one tall, wrong volume. Everything here works on headers only, so it is cheap and testable without pixels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from medtl.io.dicom.headers import DicomHeader
from medtl.io.dicom.sop import classify_sop
from medtl.io.geometry import POSITION_TOLERANCE_MM, projected_positions


@dataclass
class FileFate:
    """A file that will not be part of any scan, and why."""

    header: DicomHeader
    status: str  # "skipped" or "quarantined"
    reason_code: str
    reason: str


@dataclass
class ScanPlan:
    """The files of one scan, and how to read them."""

    handling: str  # "stack", "enhanced" or "planar"
    modality: str
    headers: list[DicomHeader]
    volume_index: int = 0
    volumes_in_series: int = 1
    flags: list[str] = field(default_factory=list)

    @property
    def series_uid(self) -> str:
        return self.headers[0].series_uid or ""


@dataclass
class GroupingResult:
    plans: list[ScanPlan]
    fates: list[FileFate]


def group_headers(headers: Iterable[DicomHeader]) -> GroupingResult:
    """Decide, for every header, which scan it belongs to or why it belongs to none."""
    plans: list[ScanPlan] = []
    fates: list[FileFate] = []
    by_series: dict[str, list[DicomHeader]] = defaultdict(list)
    for header in _drop_duplicate_instances(headers, fates):
        decision = classify_sop(header.sop_class_uid, number_of_frames=header.number_of_frames)
        if decision.handling == "skip":
            fates.append(FileFate(header, "skipped", decision.reason_code or "skipped", decision.reason or ""))
        elif not header.patient_id:
            fates.append(
                FileFate(header, "quarantined", "missing_patient_id", "no PatientID: patient-grouped splits need it")
            )
        elif header.is_localizer:
            fates.append(FileFate(header, "skipped", "localizer", "a localizer (scout) image, not diagnostic"))
        elif header.is_mosaic:
            fates.append(
                FileFate(
                    header,
                    "skipped",
                    "siemens_mosaic_unsupported",
                    "a Siemens mosaic; convert the series with dcm2niix and ingest the NIfTI",
                )
            )
        elif decision.handling in ("enhanced", "planar"):
            # Each file is a scan of its own (a whole multi-frame volume, or one projection image).
            plans.append(ScanPlan(decision.handling, header.modality or decision.modality_hint or "OT", [header]))
        else:
            by_series[header.series_uid or f"no-series:{header.sop_instance_uid}"].append(header)
    for members in by_series.values():
        planned, fated = len(plans), len(fates)
        try:
            _plan_stacked_series(members, plans, fates)
        except Exception as error:  # values no real scanner writes: this series is quarantined, the rest goes on
            del plans[planned:], fates[fated:]
            reason = f"the slice geometry could not be analysed ({type(error).__name__})"
            fates.extend(FileFate(header, "quarantined", "invalid_geometry", reason) for header in members)
    _number_volumes(plans)
    return GroupingResult(plans, fates)


def _drop_duplicate_instances(headers: Iterable[DicomHeader], fates: list[FileFate]) -> list[DicomHeader]:
    """Keep one file per SOPInstanceUID (the first by path) when the copies agree; quarantine all when they don't.

    Copies of different size cannot be the same object, and nothing here can tell which one is right.
    """
    first: dict[str, DicomHeader] = {}
    repeated: dict[str, list[DicomHeader]] = {}  # only UIDs met more than once: one list per archive, not per file
    unique: list[DicomHeader] = []
    for header in sorted(headers, key=lambda h: str(h.path)):
        uid = header.sop_instance_uid
        if uid is None:
            unique.append(header)
        elif uid not in first:
            first[uid] = header
        else:
            repeated.setdefault(uid, [first[uid]]).append(header)
    for uid, header in first.items():  # in path order of each instance's first copy
        copies = repeated.get(uid)
        if copies is None:
            unique.append(header)
            continue
        if len({h.size for h in copies}) > 1:
            fates.extend(
                FileFate(
                    h,
                    "quarantined",
                    "conflicting_duplicate_instance",
                    f"{len(copies)} files share one SOP Instance UID but differ; keep the right copy and re-run",
                )
                for h in copies
            )
            continue
        unique.append(copies[0])
        reason = "a second copy of an instance already read"
        fates.extend(FileFate(h, "skipped", "duplicate_instance", reason) for h in copies[1:])
    return unique


def _plan_stacked_series(members: list[DicomHeader], plans: list[ScanPlan], fates: list[FileFate]) -> None:
    missing = [h for h in members if h.position is None or h.orientation is None]
    for header in missing:
        fates.append(
            FileFate(header, "quarantined", "missing_geometry", "no ImagePositionPatient/ImageOrientationPatient")
        )
    usable = [h for h in members if h.position is not None and h.orientation is not None]
    for key, part in _split(usable).items():
        _plan_volumes(part, key, plans, fates)


def _split(members: list[DicomHeader]) -> dict[tuple, list[DicomHeader]]:
    """Separate what can never be one volume: echoes, temporal positions, orientations and matrix sizes."""
    parts: dict[tuple, list[DicomHeader]] = defaultdict(list)
    rounded: dict[tuple | None, tuple] = {}  # a series' slices mostly share one orientation: rounded once
    for header in members:
        orientation = rounded.get(header.orientation)
        if orientation is None:
            orientation = rounded[header.orientation] = tuple(round(value, 3) for value in header.orientation or ())
        key = (header.echo_number, header.temporal_position, orientation, header.rows, header.columns)
        parts[key].append(header)
    return parts


def _plan_volumes(part: list[DicomHeader], key: tuple, plans: list[ScanPlan], fates: list[FileFate]) -> None:
    """Within one split, repeated positions mean several volumes (e.g. time points without explicit indices)."""
    orientation = part[0].orientation
    along = projected_positions([h.position for h in part], orientation)  # type: ignore[misc]
    slots = _position_slots(along)
    counts = {len(members) for members in slots.values()}
    modality = part[0].modality
    if len(counts) > 1:
        for header in part:
            fates.append(
                FileFate(
                    header,
                    "quarantined",
                    "inconsistent_repeated_positions",
                    "some slice positions repeat and others do not: cannot tell which images form a volume; "
                    "remove the extra images or split the series",
                )
            )
        return
    repeats = counts.pop()
    ordered = {slot: sorted((part[i] for i in members), key=_temporal_order) for slot, members in slots.items()}
    for volume in range(repeats):
        headers = [ordered[slot][volume] for slot in sorted(ordered)]
        flags = ["split_repeated_positions"] if repeats > 1 else []
        if len(key) and key[0] is not None and key[0] > 1:
            flags.append(f"echo_{key[0]}")
        plans.append(ScanPlan("stack", modality, headers, flags=flags))


def _position_slots(along: np.ndarray) -> dict[int, list[int]]:
    """Cluster projected positions that are equal within tolerance; slot ids follow the position order."""
    order = np.argsort(along, kind="stable")
    slots: dict[int, list[int]] = {}
    slot = -1
    previous = None
    values = along.tolist()  # Python floats (the same doubles): numpy scalars cost more per slice than they save
    for index in order.tolist():
        value = values[index]
        if previous is None or value - previous > POSITION_TOLERANCE_MM:
            slot += 1
            slots[slot] = []
        slots[slot].append(index)
        previous = value
    return slots


def _temporal_order(header: DicomHeader) -> tuple:
    return (
        header.temporal_position if header.temporal_position is not None else -1,
        header.trigger_time if header.trigger_time is not None else -1.0,
        header.acquisition_time or "",
        header.acquisition_number if header.acquisition_number is not None else -1,
        header.instance_number if header.instance_number is not None else -1,
        str(header.path),
    )


def _number_volumes(plans: list[ScanPlan]) -> None:
    """Give every scan of a series its index, in a stable order (echo, time point, first position)."""
    by_series: dict[str, list[ScanPlan]] = defaultdict(list)
    for plan in plans:
        by_series[plan.series_uid].append(plan)
    for members in by_series.values():
        members.sort(key=lambda p: (p.handling, p.headers[0].echo_number or 0, _temporal_order(p.headers[0])))
        for index, plan in enumerate(members):
            plan.volume_index = index
            plan.volumes_in_series = len(members)
