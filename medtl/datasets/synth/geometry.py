"""Geometry of the synthetic series, and the array-order conventions that cohort.json and every file follow.

Patient coordinates are DICOM LPS in millimetres: +x towards the patient's Left, +y Posterior, +z Superior (head).

DICOM slice stack. ImageOrientationPatient (IOP) holds two unit vectors: `row_dir` (IOP[0:3], the direction in which
the column index i grows along a row) and `col_dir` (IOP[3:6], the direction in which the row index j grows).
PixelSpacing is [spacing between rows, spacing between columns] = [dj, di]. The slice normal is row_dir x col_dir;
slices are ordered by their ImagePositionPatient (IPP) projected on that normal ("position order", index k), which
grows by exactly `slice_spacing` from one slice to the next. InstanceNumber and file names carry no order.

    voxel (i, j, k)  ->  LPS = IPP_0 + i * di * row_dir + j * dj * col_dir + k * dk * normal

where IPP_0 is the IPP of the first slice in position order. The 4x4 LPS affine has columns
[di * row_dir, dj * col_dir, dk * normal, IPP_0].

Array orders. A DICOM slice's pixel array is (j, i) = (rows, columns); the volume stacked in position order is
(k, j, i). The NIfTI copy stores the same voxels in (i, j, k) order (numpy `volume.transpose(2, 1, 0)`) with the RAS
affine diag(-1, -1, 1, 1) @ LPS affine, so NIfTI voxel (0, 0, 0) sits at the RAS position of IPP_0. cohort.json
records `shape_ijk` and `spacing_ijk` (mm) in (i, j, k) order.

Projection X-ray (DX). No IPP/IOP: the detector plane is the patient's coronal plane seen from the front, column
index growing towards the patient's left (+x) and row index towards the feet (-z): PatientOrientation L\\F.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medtl.io.geometry import LPS_TO_RAS

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
SAGITTAL = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))
CORONAL = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))


def axial_rotated(angle_deg: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Axial orientation rotated about the z axis (gantry-free in-plane rotation), cosines rounded for DICOM DS."""
    c = round(float(np.cos(np.radians(angle_deg))), 6)
    s = round(float(np.sin(np.radians(angle_deg))), 6)
    return (c, s, 0.0), (-s, c, 0.0)


@dataclass(frozen=True)
class SliceStack:
    """A stack of parallel slices in position order (see the module docstring for the conventions)."""

    origin: tuple[float, float, float]  # IPP of slice k = 0
    row_dir: tuple[float, float, float]
    col_dir: tuple[float, float, float]
    pixel_spacing: float  # square pixels: di = dj
    slice_spacing: float
    columns: int
    rows: int
    slices: int

    @property
    def normal(self) -> np.ndarray:
        normal = np.cross(self.row_dir, self.col_dir)
        return normal / np.linalg.norm(normal)

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        return (self.columns, self.rows, self.slices)

    @property
    def spacing_ijk(self) -> tuple[float, float, float]:
        return (self.pixel_spacing, self.pixel_spacing, self.slice_spacing)

    @property
    def iop(self) -> list[float]:
        return [*self.row_dir, *self.col_dir]

    def ipp(self, k: int) -> np.ndarray:
        return np.asarray(self.origin, dtype=float) + k * self.slice_spacing * self.normal

    def affine_lps(self) -> np.ndarray:
        affine = np.eye(4)
        affine[:3, 0] = np.asarray(self.row_dir) * self.pixel_spacing
        affine[:3, 1] = np.asarray(self.col_dir) * self.pixel_spacing
        affine[:3, 2] = self.normal * self.slice_spacing
        affine[:3, 3] = self.origin
        return affine

    def affine_ras(self) -> np.ndarray:
        return LPS_TO_RAS @ self.affine_lps()

    def voxel_positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LPS x, y, z of every voxel centre, each shaped (k, j, i) like the stacked DICOM volume."""
        k, j, i = np.meshgrid(np.arange(self.slices), np.arange(self.rows), np.arange(self.columns), indexing="ij")
        a = self.affine_lps()
        x, y, z = (a[axis, 0] * i + a[axis, 1] * j + a[axis, 2] * k + a[axis, 3] for axis in range(3))
        return x, y, z

    @staticmethod
    def centred(
        centre: np.ndarray,
        orientation: tuple[tuple[float, ...], tuple[float, ...]],
        *,
        pixel_spacing: float,
        slice_spacing: float,
        size: int,
        slices: int,
    ) -> SliceStack:
        """The stack of `slices` slices of size x size pixels whose middle voxel lies at `centre` (LPS)."""
        row_dir, col_dir = (tuple(float(v) for v in axis) for axis in orientation)
        normal = np.cross(row_dir, col_dir)
        normal = normal / np.linalg.norm(normal)
        half = (size - 1) / 2 * pixel_spacing
        origin = (
            np.asarray(centre, dtype=float)
            - half * np.asarray(row_dir)
            - half * np.asarray(col_dir)
            - (slices - 1) / 2 * slice_spacing * normal
        )
        return SliceStack(
            origin=tuple(round(float(v), 2) for v in origin),  # type: ignore[arg-type]
            row_dir=row_dir,  # type: ignore[arg-type]
            col_dir=col_dir,  # type: ignore[arg-type]
            pixel_spacing=pixel_spacing,
            slice_spacing=slice_spacing,
            columns=size,
            rows=size,
            slices=slices,
        )

    def to_truth(self) -> dict[str, Any]:
        return {
            "shape_ijk": list(self.shape_ijk),
            "spacing_ijk": list(self.spacing_ijk),
            "origin_lps": list(self.origin),
            "image_orientation_patient": self.iop,
            "affine_lps": self.affine_lps().round(6).tolist(),
            "affine_ras": self.affine_ras().round(6).tolist(),
        }

    @staticmethod
    def from_truth(entry: dict[str, Any]) -> SliceStack:
        iop = entry["image_orientation_patient"]
        columns, rows, slices = entry["shape_ijk"]
        return SliceStack(
            origin=tuple(entry["origin_lps"]),  # type: ignore[arg-type]
            row_dir=tuple(iop[:3]),  # type: ignore[arg-type]
            col_dir=tuple(iop[3:]),  # type: ignore[arg-type]
            pixel_spacing=entry["spacing_ijk"][0],
            slice_spacing=entry["spacing_ijk"][2],
            columns=columns,
            rows=rows,
            slices=slices,
        )


@dataclass(frozen=True)
class Projection:
    """A frontal projection: detector pixel (row r, column c) looks along +y through LPS (x, z) below."""

    centre_x: float
    centre_z: float
    pixel_spacing: float
    size: int
    y_from: float
    y_to: float
    y_step: float

    def detector_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS x and z of every detector pixel, each shaped (rows, columns)."""
        offsets = (np.arange(self.size) - (self.size - 1) / 2) * self.pixel_spacing
        z = self.centre_z - offsets[:, None] + 0 * offsets[None, :]
        x = self.centre_x + offsets[None, :] + 0 * offsets[:, None]
        return x, z

    def to_truth(self) -> dict[str, Any]:
        return {
            "shape_rows_columns": [self.size, self.size],
            "pixel_spacing": self.pixel_spacing,
            "centre_x": self.centre_x,
            "centre_z": self.centre_z,
            "ray_y_from": self.y_from,
            "ray_y_to": self.y_to,
            "ray_y_step": self.y_step,
        }

    @staticmethod
    def from_truth(entry: dict[str, Any]) -> Projection:
        return Projection(
            centre_x=entry["centre_x"],
            centre_z=entry["centre_z"],
            pixel_spacing=entry["pixel_spacing"],
            size=entry["shape_rows_columns"][0],
            y_from=entry["ray_y_from"],
            y_to=entry["ray_y_to"],
            y_step=entry["ray_y_step"],
        )
