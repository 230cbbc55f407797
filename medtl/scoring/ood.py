"""Flags for inputs unlike the training data: the model still scores them, but nobody should trust it blindly.

Compared with the training fingerprint (stored in the artifact): modality, kind of image, spacing, shape and
intensity statistics; and, per scan, the distance of the model's own features from the training distribution
(medtl.training.feature_reference, medtl.training.feature_ood). Ingest's QC flags travel along, prefixed `qc:`,
except those that only describe how a scan was assembled.
"""

from __future__ import annotations

from typing import Any

from medtl.contracts.ingest import Fingerprint, GroupStats

# QC flags that describe how a scan was read, not a problem with it.
BENIGN_QC_FLAGS = frozenset(
    {"monochrome1_inverted", "split_repeated_positions", "split_4d", "imager_pixel_spacing", "rgb_to_grey"}
)
SPACING_FACTOR = 2.0  # outside [p05 / 2, p95 * 2] of the training group
SHAPE_FACTOR = 2.0
INTENSITY_MARGIN = 0.5  # a scan's 1st/99th percentile beyond the training range by half its width


def _group(fingerprint: Fingerprint, kind: str, modality: str) -> GroupStats | None:
    for group in fingerprint.groups:
        if group.image_kind == kind and group.modality == modality:
            return group
    return None


def _outside(values: list[float], stats: list[Any], factor: float) -> bool:
    return any(
        value < axis.p05 / factor or value > axis.p95 * factor for value, axis in zip(values, stats, strict=False)
    )


def input_flags(row: dict[str, Any], fingerprint: Fingerprint, *, modalities: list[str], image_kind: str) -> list[str]:
    """Flags from the scan's manifest row alone (before any prediction)."""
    flags = [f"qc:{flag}" for flag in row.get("qc_flags", []) if flag not in BENIGN_QC_FLAGS]
    if row["image_kind"] != image_kind:
        return [*flags, "kind_mismatch"]
    if row["modality"] not in modalities:
        flags.append("modality_unseen")
    group = _group(fingerprint, row["image_kind"], row["modality"]) or _group(fingerprint, image_kind, modalities[0])
    if group is None:
        return flags
    if _outside(list(row["spacing"]), group.spacing, SPACING_FACTOR):
        flags.append("spacing_out_of_range")
    if _outside([float(v) for v in row["shape"]], group.shape, SHAPE_FACTOR):
        flags.append("shape_out_of_range")
    stats = group.intensity
    margin = INTENSITY_MARGIN * max(stats.p99 - stats.p01, 1e-6)
    if row["intensity_p01"] < stats.p01 - margin or row["intensity_p99"] > stats.p99 + margin:
        flags.append("intensity_out_of_range")
    return flags
