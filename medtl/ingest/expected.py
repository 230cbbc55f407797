"""The preprocessing spec a first ingest will choose, foreseen from the headers before any pixel is decoded.

Why: without a given spec, ingest chooses one from the dataset (the dominant kind of scan's median spacing and
extent, `pipeline._default_spec`), which is known only once every scan is decoded; each scan was then read back
from the cache, in a pass of its own, to be preprocessed. A DICOM stack's geometry follows from its headers alone,
so the choice can be foreseen with the same functions and each scan preprocessed while its decoded array is still
in memory. A wrong guess (a slice that fails to decode can move a median) costs that early work only: the
preprocessing pass makes whatever the chosen spec still needs.

Foreseen only where the dominant kind of scan is DICOM stacks: a NIfTI file's geometry is in its own header, not
read yet, and a projection image's array shape depends on its pixel data (colour or not).

Computed by the worker processes, which are idle between the header pass and decoding: the geometry of every
stack costs ~0.15 ms, and an archive of many small series made this the largest piece of the ingest process's own
work, which is what bounds how many workers an ingest can keep busy. Each worker gets only the few header fields a
stack's geometry is computed from (SliceGeometry), in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from operator import attrgetter
from typing import Any, NamedTuple

from medtl.contracts import PreprocessingSpec
from medtl.contracts.ingest import GroupStats
from medtl.contracts.ingest_state import as_tuples
from medtl.ingest.fingerprint import group_stats
from medtl.ingest.worker import ROW_DECIMALS
from medtl.io.dicom.grouping import ScanPlan
from medtl.io.dicom.reader import stack_geometry
from medtl.io.geometry import canonical_extent

Row = dict[str, Any]


class SliceGeometry(NamedTuple):
    """The fields of a slice's header that its stack's geometry and row are foreseen from (reader.PlacedSlice)."""

    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    columns: int | None
    rows: int | None
    modality: str


class _Stack(NamedTuple):
    """A stack as sent to a worker: plain tuples (a named tuple unpickles through a Python call each), made
    SliceGeometry again there."""

    slices: list[tuple]
    modality: str  # the plan's, where the first slice names none


def expected_spec(
    plans: Sequence[ScanPlan],
    *,
    has_nifti: bool,
    choose: Callable[[list[GroupStats]], PreprocessingSpec | None],
    executor: Executor | None = None,
    n_workers: int = 1,
) -> PreprocessingSpec | None:
    """The spec `choose` will pick from the rows of `plans` once decoded, or None where it cannot be foreseen.
    With an executor, the stacks' rows are computed by its workers."""
    if has_nifti:
        return None
    rows: list[Row | None] = []
    stacks: list[_Stack] = []
    for plan in plans:
        if plan.handling == "planar":  # counted for the choice of the dominant kind; its shape is never used
            header = plan.headers[0]
            rows.append({"image_kind": "image2d", "modality": header.modality or plan.modality or "OT",
                         "shape": [0, 0], "spacing": [0.0, 0.0]})  # fmt: skip
        elif plan.handling == "stack":
            rows.append(None)  # filled in below, in order
            stacks.append(_Stack(list(map(_slice_of, plan.headers)), plan.modality))
        else:
            return None
    stack_rows = iter(_stack_rows(stacks, executor, n_workers))
    planned = []
    for number, row in enumerate(rows):
        row = row if row is not None else next(stack_rows)
        if row is None:  # geometry no scanner writes: decoding will say so; nothing is foreseen
            return None
        planned.append({"scan_id": f"planned-{number}", **row})
    groups = group_stats(planned, {})
    if not groups or max(groups, key=lambda group: group.n_scans).image_kind != "volume":
        return None
    return choose(groups)


# A header's SliceGeometry fields, as a plain tuple (one call in C per header of the archive).
_slice_of = attrgetter("position", "orientation", "pixel_spacing", "columns", "rows", "modality")


def _stack_rows(stacks: list[_Stack], executor: Executor | None, n_workers: int) -> list[Row | None]:
    """Each stack's row (None: not foreseeable), in order; in a few chunks per worker when there is a pool."""
    if executor is None or len(stacks) < _WORTH_SENDING:
        return _planned_rows(stacks)
    size = -(-len(stacks) // (4 * max(1, n_workers)))
    try:
        chunks = executor.map(_planned_rows, [stacks[i : i + size] for i in range(0, len(stacks), size)])
        return [row for chunk in chunks for row in chunk]
    except BrokenProcessPool:  # a header reader crashed the pool before: foreseen here instead
        return _planned_rows(stacks)


_WORTH_SENDING = 64  # fewer stacks cost less here than the round trip to the workers


def _planned_rows(stacks: Sequence[_Stack]) -> list[Row | None]:
    """What each stack's manifest row will say of its kind, modality, shape and spacing (None: not foreseeable)."""
    rows: list[Row | None] = []
    for stack in stacks:
        try:
            rows.append(_stack_row(stack))
        except Exception:  # geometry no scanner writes: decoding will say so
            rows.append(None)
    return rows


def _stack_row(stack: _Stack) -> Row:
    _, ordered, affine, shape = stack_geometry(as_tuples(SliceGeometry, stack.slices))
    canonical_shape, spacing = canonical_extent(affine, shape)
    return {
        "image_kind": "volume",
        "modality": ordered[0].modality or stack.modality or "OT",
        "shape": list(canonical_shape),
        "spacing": [round(value, ROW_DECIMALS) for value in spacing],
    }
