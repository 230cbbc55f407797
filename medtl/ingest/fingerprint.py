"""Dataset statistics: the basis for default preprocessing and for out-of-distribution checks at scoring."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medtl import __version__
from medtl.contracts.ingest import AxisStats, Fingerprint, GroupStats
from medtl.hashing import canonical_json
from medtl.ingest.intensity import IntensitySummary, pooled_stats


def row_digest(row: dict[str, Any]) -> str:
    """sha256 of one manifest row's canonical JSON."""
    return hashlib.sha256(canonical_json(row)).hexdigest()


def row_digests(
    rows: Sequence[dict[str, Any]], known: Mapping[str, tuple[dict[str, Any], str]] | None = None
) -> dict[str, str]:
    """Each row's digest by scan id.

    `known` (by scan id): rows carried over from the last run as they were read, with the digest the last run
    recorded for them (ingest_state.json); a row still equal to its known version (its label may have been joined
    again) is not serialised again. Only carried rows belong in it: equal values of other types (1 and 1.0)
    serialise differently. On an archive re-run with little new, serialising every row was a tenth of the run.
    """
    known = known or {}
    digests = {}
    for row in rows:
        before = known.get(row["scan_id"])
        digests[row["scan_id"]] = before[1] if before is not None and before[0] == row else row_digest(row)
    return digests


def manifest_hash(digests: Mapping[str, str]) -> str:
    """Hash of the manifest's content, independent of row order and of the Parquet writer's version: the sha256 of
    the rows' digests (`row_digest`) in scan-id order, one per line. A hash of hashes, so that a re-run that carries
    most rows over needs only their recorded digests, not their serialisation."""
    return hashlib.sha256("".join(f"{digests[scan_id]}\n" for scan_id in sorted(digests)).encode()).hexdigest()


def _axis_stats(values: np.ndarray) -> list[AxisStats]:
    return [
        AxisStats(
            p05=float(np.percentile(column, 5)), median=float(np.median(column)), p95=float(np.percentile(column, 95))
        )
        for column in values.T
    ]


def group_stats(rows: Sequence[dict[str, Any]], intensities: dict[str, IntensitySummary]) -> list[GroupStats]:
    """Per (image kind, modality): spacing, shape and pooled intensity statistics (from each scan's summary)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["image_kind"], row["modality"])].append(row)
    out = []
    for (kind, modality), members in sorted(groups.items()):
        ndims = {len(row["shape"]) for row in members}
        if len(ndims) != 1:
            continue
        spacing = np.array([row["spacing"] for row in members], dtype=float)
        shape = np.array([row["shape"] for row in members], dtype=float)
        ids = sorted(row["scan_id"] for row in members)  # the order of ingest must not show in the statistics
        out.append(
            GroupStats(
                image_kind=kind,
                modality=modality,
                n_scans=len(members),
                spacing=_axis_stats(spacing),
                shape=_axis_stats(shape),
                intensity=pooled_stats(intensities[scan_id] for scan_id in ids if scan_id in intensities),
            )
        )
    return out


def build_fingerprint(
    rows: Sequence[dict[str, Any]],
    groups: list[GroupStats],
    *,
    pseudonym_key_id: str,
    preprocessing_hash: str | None,
    digests: Mapping[str, str],
) -> Fingerprint:
    """`digests`: every row's digest by scan id (`row_digests`)."""
    labelled = [row for row in rows if row.get("label") is not None]
    patients_per_label: dict[str, set[str]] = defaultdict(set)
    for row in labelled:
        patients_per_label[row["label"]].add(row["patient_id"])
    return Fingerprint(
        medtl_version=__version__,
        pseudonym_key_id=pseudonym_key_id,
        manifest_hash=manifest_hash(digests),
        n_scans=len(rows),
        n_patients=len({row["patient_id"] for row in rows}),
        n_studies=len({row["study_id"] for row in rows if row.get("study_id")}),
        modalities=dict(sorted(Counter(row["modality"] for row in rows).items())),
        labels=dict(sorted(Counter(row["label"] for row in labelled).items())),
        patients_per_label={label: len(ids) for label, ids in sorted(patients_per_label.items())},
        groups=groups,
        preprocessing_hash=preprocessing_hash,
    )
