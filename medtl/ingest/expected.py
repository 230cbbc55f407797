"""The preprocessing spec a first ingest will choose, foreseen from the headers before any pixel is decoded.

Why: without a given spec, ingest chooses one from the dataset (the dominant kind of scan's median spacing and
extent, `pipeline._default_spec`), which is known only once every scan is decoded; each scan was then read back
from the cache, in a pass of its own, to be preprocessed. A DICOM stack's geometry follows from its headers alone,
so the choice can be foreseen with the same functions and each scan preprocessed while its decoded array is still
in memory. A wrong guess (a slice that fails to decode can move a median) costs that early work only: the
preprocessing pass makes whatever the chosen spec still needs.

Foreseen only where the dominant kind of scan is DICOM stacks: a NIfTI file's geometry is in its own header, not
read yet, and a projection image's array shape depends on its pixel data (colour or not).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from medtl.contracts import PreprocessingSpec
from medtl.contracts.ingest import GroupStats
from medtl.ingest.fingerprint import group_stats
from medtl.ingest.worker import ROW_DECIMALS
from medtl.io.dicom.grouping import ScanPlan
from medtl.io.dicom.reader import stack_geometry
from medtl.io.geometry import canonical_extent


def expected_spec(
    plans: Sequence[ScanPlan], *, has_nifti: bool, choose: Callable[[list[GroupStats]], PreprocessingSpec | None]
) -> PreprocessingSpec | None:
    """The spec `choose` will pick from the rows of `plans` once decoded, or None where it cannot be foreseen."""
    if has_nifti:
        return None
    rows = []
    for number, plan in enumerate(plans):
        try:
            row = _planned_row(plan)
        except Exception:  # geometry no scanner writes: decoding will say so; nothing is foreseen
            return None
        if row is None:
            return None
        rows.append({"scan_id": f"planned-{number}", **row})
    groups = group_stats(rows, {})
    if not groups or max(groups, key=lambda group: group.n_scans).image_kind != "volume":
        return None
    return choose(groups)


def _planned_row(plan: ScanPlan) -> dict[str, Any] | None:
    """What the scan's manifest row will say of its kind, modality, shape and spacing (None: not foreseeable)."""
    if plan.handling == "planar":  # counted for the choice of the dominant kind; its shape is never used
        header = plan.headers[0]
        return {"image_kind": "image2d", "modality": header.modality or plan.modality or "OT", "shape": [0, 0],
                "spacing": [0.0, 0.0]}  # fmt: skip
    if plan.handling != "stack":
        return None
    _, ordered, affine, shape = stack_geometry(plan.headers)
    canonical_shape, spacing = canonical_extent(affine, shape)
    return {
        "image_kind": "volume",
        "modality": ordered[0].modality or plan.modality or "OT",
        "shape": list(canonical_shape),
        "spacing": [round(value, ROW_DECIMALS) for value in spacing],
    }
