"""The one in-memory form every reader produces: a decoded scan with its geometry and what was checked.

Array conventions (documented in the README): volumes are float32 arrays in canonical RAS index order
(x, y, z), like NIfTI after `as_closest_canonical`, so the same scan read from DICOM or from NIfTI gives the same
array and affine. 2D images keep display order (rows, columns), as a viewer shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ImageKind = Literal["volume", "image2d"]


@dataclass
class Scan:
    """A decoded scan, ready for QC, caching and preprocessing. `meta` holds non-identifying header facts only."""

    # float32, physical units (HU for CT) where the modality has them; int16 / uint16 holding the same values when
    # a DICOM series is whole numbers that fit (medtl/io/dicom/integral.py)
    array: np.ndarray
    affine: np.ndarray  # 4x4 voxel index -> RAS mm (2D: row/column -> image plane mm)
    image_kind: ImageKind
    orientation: str  # axis codes of the array, e.g. "RAS"; 2D: PatientOrientation letters or "image"
    volume_index: int = 0
    volumes_in_series: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    qc_flags: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size per array axis, from the affine's column norms (exact for any rotation)."""
        ndim = self.array.ndim
        return tuple(float(np.linalg.norm(self.affine[:3, axis])) for axis in range(ndim))

    def flag(self, name: str) -> None:
        if name not in self.qc_flags:
            self.qc_flags.append(name)
