"""Slice geometry: order slices by position, derive spacing, detect gaps and tilt, build affines.

Why positions and not InstanceNumber or file names: both are set by scanners and PACS exports in any order; only
ImagePositionPatient projected on the slice normal says where a slice is. Spacing comes from those projections,
not from SliceThickness (which is the slab thickness, not the step).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel.orientations as nio
import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
POSITION_TOLERANCE_MM = 0.01
GAP_FACTOR = 1.5
NONUNIFORM_TOLERANCE = 0.01  # relative deviation of one step from the median step
TILT_TOLERANCE_DEG = 0.5


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of an image plane from ImageOrientationPatient (row direction, column direction); read-only.

    Remembered per orientation: an archive's series share a few orientations, and the cross product cost more
    than the rest of a series' geometry (twice per stack, in grouping, decoding and foreseeing the spec)."""
    return _unit_normal(tuple(float(value) for value in orientation))


@functools.lru_cache(maxsize=4096)
def _unit_normal(orientation: tuple[float, ...]) -> np.ndarray:
    row_dir = np.asarray(orientation[:3], dtype=float)
    col_dir = np.asarray(orientation[3:6], dtype=float)
    normal = np.cross(row_dir, col_dir)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise ValueError("ImageOrientationPatient rows and columns are parallel")
    unit = normal / norm
    unit.setflags(write=False)
    return unit


def projected_positions(positions: Sequence[Sequence[float]], orientation: Sequence[float]) -> np.ndarray:
    return np.asarray(positions, dtype=float) @ slice_normal(orientation)


@dataclass
class StackGeometry:
    """What the positions of a sorted stack say about it."""

    order: list[int]  # indices of the input slices, sorted along the normal
    step: np.ndarray  # mean displacement between consecutive slices (mm, LPS)
    spacing: float  # median distance between slices along the normal
    flags: list[str] = field(default_factory=list)
    tilt_degrees: float = 0.0


def analyse_stack(positions: Sequence[Sequence[float]], orientation: Sequence[float]) -> StackGeometry:
    """Sort by projected position and check the spacing; duplicates must have been split off before."""
    points = np.asarray(positions, dtype=float)
    along = projected_positions(points, orientation)
    order: list[int] = np.argsort(along, kind="stable").tolist()
    if len(order) == 1:
        return StackGeometry(order, np.zeros(3), 0.0, ["single_slice"])
    sorted_along = along[order]
    steps = np.diff(sorted_along)
    flags: list[str] = []
    if np.any(steps < POSITION_TOLERANCE_MM):
        flags.append("duplicate_positions")
    median = _median(steps)
    if median > POSITION_TOLERANCE_MM:
        if np.any(steps > GAP_FACTOR * median):
            flags.append("slice_gap")
        elif np.any(np.abs(steps - median) > NONUNIFORM_TOLERANCE * median + POSITION_TOLERANCE_MM):
            flags.append("nonuniform_spacing")
    sorted_points = points[order]
    step = (sorted_points[-1] - sorted_points[0]) / (len(order) - 1)
    tilt = _angle_degrees(step, slice_normal(orientation))
    if tilt > TILT_TOLERANCE_DEG:
        flags.append("gantry_tilt")
    return StackGeometry(order, step, median, flags, tilt)


def _median(values: np.ndarray) -> float:
    """`np.median` of a 1-D float array, to the bit, without its overhead: a series of a few slices is analysed
    while foreseeing the spec and again while decoding, and an archive has thousands."""
    if np.isnan(values).any():
        return float("nan")
    ordered = sorted(values.tolist())
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _angle_degrees(vector: np.ndarray, normal: np.ndarray) -> float:
    length = np.linalg.norm(vector)
    if length < 1e-9:
        return 0.0
    cosine = abs(float(vector @ normal)) / length
    return float(np.degrees(np.arccos(min(1.0, cosine))))


def lps_affine(
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    first_position: Sequence[float],
    step: Sequence[float] | None,
) -> np.ndarray:
    """Voxel (i = column, j = row, k = slice) to LPS mm.

    PixelSpacing is (between rows, between columns): moving one column (i) goes along the row direction by the
    column spacing. The slice axis uses the measured step between positions, so a tilted stack keeps its true
    (sheared) geometry instead of being silently straightened.
    """
    row_dir = np.asarray(orientation[:3], dtype=float)
    col_dir = np.asarray(orientation[3:6], dtype=float)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * float(pixel_spacing[1])
    affine[:3, 1] = col_dir * float(pixel_spacing[0])
    if step is None or np.linalg.norm(step) < 1e-9:
        affine[:3, 2] = slice_normal(orientation)
    else:
        affine[:3, 2] = np.asarray(step, dtype=float)
    affine[:3, 3] = np.asarray(first_position, dtype=float)
    return affine


_NEAR_AXIS = 0.9  # a direction this close to one axis (within about 25 degrees) maps onto it, however rounded


def orientation(affine: np.ndarray) -> np.ndarray:
    """nibabel's `io_orientation`: which RAS axis each array axis maps onto, and in which direction.

    Why not always nibabel's: it takes an SVD per call, which made the orientation cost more than the rest of a
    small series' geometry. Every column of a scanner's affine is close to one axis except for oblique
    acquisitions, and there the largest component of each column decides alone, as it does in nibabel; anything
    further from an axis is left to nibabel. In plain floats: numpy's overhead on a 3x3 matrix is most of the cost
    (the same sums in the same order, so the same answer as numpy's norms and argmax).
    """
    picked = []
    for column in np.asarray(affine, dtype=float)[:3, :3].T.tolist():  # one list per array axis
        norm = math.sqrt(column[0] * column[0] + column[1] * column[1] + column[2] * column[2])
        axis = max(range(3), key=lambda i: abs(column[i]))  # the first of equal ones, as argmax
        if not (norm > 0 and abs(column[axis]) / norm > _NEAR_AXIS):
            return nio.io_orientation(affine)
        picked.append((float(axis), 1.0 if column[axis] > 0 else -1.0))
    if len({axis for axis, _ in picked}) != 3:
        return nio.io_orientation(affine)
    return np.array(picked)


def canonical_buffer(
    affine: np.ndarray, shape: tuple[int, int, int], dtype: np.dtype | type = np.float32
) -> tuple[np.ndarray, np.ndarray, str]:
    """An empty volume (float32 unless told) in canonical (RAS+) order, and a view of it in the source's order.

    Writing the source's slices through the view fills the canonical volume directly, so a reader never holds the
    volume twice (once as read, once reoriented). The volume is laid out in Fortran order, like NIfTI on disk:
    an axial slice (fixed z) is then one contiguous block, which makes slice-by-slice filling fast.
    """
    transform = orientation(affine)  # how each source axis maps onto R, A, S
    volume = np.empty(_reordered(transform, [int(size) for size in shape]), dtype=dtype, order="F")
    identity = nio.axcodes2ornt(("R", "A", "S"))
    view = nio.apply_orientation(volume, nio.ornt_transform(identity, transform))
    return volume, view, "RAS"


def canonical_extent(
    affine: np.ndarray, shape: tuple[int, int, int]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """The shape and voxel size (as `Scan.spacing` measures it) of the canonical (RAS+) array made from a source
    array of `shape` with `affine`, without making it: reorienting permutes and flips the affine's columns, so
    each size is a source column's norm."""
    transform = orientation(affine)
    norms = [float(np.linalg.norm(affine[:3, axis])) for axis in range(3)]
    return _reordered(transform, shape), _reordered(transform, norms)


def _reordered(transform: np.ndarray, values: Sequence[Any]) -> Any:
    """Per source axis `values`, in canonical axis order."""
    reordered = list(values)
    for source_axis in range(3):
        reordered[int(transform[source_axis, 0])] = values[source_axis]
    return tuple(reordered)


def affine_to_canonical(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The affine of the canonical array made from a source array of `shape` with `affine`."""
    transform = orientation(affine)
    return affine @ nio.inv_ornt_aff(transform, shape)


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Reorder/flip axes so the array is closest to RAS+, updating the affine; returns axis codes."""
    transform = orientation(affine)  # how each array axis maps onto R, A, S
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return np.asfortranarray(array), affine, "RAS"
    reoriented = nio.apply_orientation(array, transform)
    return np.asfortranarray(reoriented), affine_to_canonical(affine, array.shape), "RAS"
