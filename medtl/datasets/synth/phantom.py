"""The synthetic patient: a body phantom in patient (LPS) millimetres, and how scanners see it.

Why a continuous phantom rather than a voxel array: every series of a patient (axial CT at any spacing, origin and
in-plane rotation, sagittal/coronal localizers, a frontal X-ray projection, a follow-up study) is sampled from the
same object, so geometry mistakes in ingest show up as wrong values, and the finding is visible in every view.

The finding is a sphere, brighter or darker than soft tissue; its radius and contrast shrink as `difficulty` grows.
Negative patients get the same "focus" point (where a lesion would be) without a lesion, so the field of view never
gives the label away. Multi-finding cohorts add named findings (`findings`, see synth/tasks.py); graded cohorts scale
the one lesion with the grade.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medtl.datasets.synth.geometry import Projection, SliceStack

AIR_HU = -1000.0
FAT_HU = -100.0
BONE_HU = 700.0
HU_MIN, HU_MAX = -1024, 3071  # the range every CT encoding below can hold
MU_WATER_PER_MM = 0.02  # linear attenuation of water at a typical effective energy
DX_MAX = 4095  # 12-bit detector values
DX_GAIN = 2.5  # detector response: spreads the body over most of the 12-bit range


@dataclass(frozen=True)
class Lesion:
    centre: tuple[float, float, float]
    radius_mm: float
    contrast_hu: float  # signed: > 0 brighter than tissue, < 0 darker


@dataclass(frozen=True)
class Phantom:
    centre: tuple[float, float, float]
    body_axes: tuple[float, float, float]  # semi-axes (mm) of the outer body ellipsoid
    fat_mm: float  # subcutaneous fat layer thickness
    tissue_hu: float
    organ_centre: tuple[float, float, float]
    organ_axes: tuple[float, float, float]
    organ_hu: float
    spine_xy: tuple[float, float]
    spine_radius_mm: float
    focus: tuple[float, float, float]  # lesion centre for positives, same-distribution point for negatives
    lesion: Lesion | None
    findings: tuple[tuple[str, Lesion], ...] = ()  # multi-finding cohorts: (finding name, its sphere)

    def to_truth(self) -> dict[str, Any]:
        truth = asdict(self)
        del truth["findings"]  # absent, not empty, in binary and graded cohorts (their cohort.json is unchanged)
        if self.findings:
            truth["findings"] = [{"finding": name, **asdict(lesion)} for name, lesion in self.findings]
        return truth

    @staticmethod
    def from_truth(entry: dict[str, Any]) -> Phantom:
        fields = {key: tuple(value) if isinstance(value, list) else value for key, value in entry.items()}
        lesion = entry.get("lesion")
        fields["lesion"] = None if lesion is None else _lesion(lesion)
        fields["findings"] = tuple((item["finding"], _lesion(item)) for item in entry.get("findings", ()))
        return Phantom(**fields)


def _lesion(entry: dict[str, Any]) -> Lesion:
    return Lesion(tuple(entry["centre"]), entry["radius_mm"], entry["contrast_hu"])


def lesion_size_and_contrast(difficulty: float) -> tuple[float, float]:
    """Nominal lesion radius (mm) and |contrast| (HU): easy = large and conspicuous, hard = small and faint.

    Calibrated so that at difficulty 0.3 (radius 5.8 mm, 228 HU) a small 3D CNN trained from scratch on 40 patients
    separates the classes in cross-validation; at 1.0 (3 mm, 60 HU against 10-15 HU noise) it is subtle.
    """
    return 7.0 - 4.0 * difficulty, 300.0 - 240.0 * difficulty


def draw_phantom(
    rng: np.random.Generator, *, positive: bool, difficulty: float, size: float = 1.0, brightness: float = 1.0
) -> Phantom:
    """`size` and `brightness` scale the lesion's radius and contrast (a graded cohort's grade); the random draws
    are the same whatever they are, so a binary cohort is unchanged."""

    def r(low: float, high: float, digits: int = 2) -> float:
        return round(float(rng.uniform(low, high)), digits)

    centre = (r(-8, 8), r(-10, 10), r(-300, 100))
    axes = (r(14, 16.5), r(10, 12.5), r(60, 90))
    tissue = r(35, 50, 1)
    organ_centre = (centre[0] + r(-0.5, -0.3) * axes[0], centre[1] - r(0.1, 0.3) * axes[1], centre[2] + r(-10, 10))
    organ_axes = (r(0.3, 0.4) * axes[0], r(0.3, 0.4) * axes[1], r(25, 40))
    spine_xy = (centre[0] + r(-1, 1), centre[1] + r(0.5, 0.6) * axes[1])
    # Focus inside the inner body, in front of the spine; drawn for everyone so the field of view stays uninformative.
    angle, radial = rng.uniform(0, 2 * np.pi), 0.4 * np.sqrt(rng.uniform(0, 1))
    focus = (
        round(centre[0] + radial * np.cos(angle) * axes[0], 2),
        round(centre[1] - (0.1 + abs(radial * np.sin(angle)) * 0.7) * axes[1], 2),
        round(centre[2] + float(rng.uniform(-0.25, 0.25)) * axes[2], 2),
    )
    radius, contrast = lesion_size_and_contrast(difficulty)
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    lesion_radius = r(0.85, 1.15) * radius * size
    lesion_contrast = sign * r(0.85, 1.15) * contrast * brightness
    lesion = Lesion(focus, round(lesion_radius, 2), round(lesion_contrast, 1)) if positive else None
    return Phantom(
        centre=centre,
        body_axes=axes,
        fat_mm=r(1.5, 3.0),
        tissue_hu=tissue,
        organ_centre=tuple(round(v, 2) for v in organ_centre),  # type: ignore[arg-type]
        organ_axes=tuple(round(v, 2) for v in organ_axes),  # type: ignore[arg-type]
        organ_hu=round(tissue + r(15, 25, 1), 1),
        spine_xy=(round(spine_xy[0], 2), round(spine_xy[1], 2)),
        spine_radius_mm=r(2.5, 3.5),
        focus=focus,  # type: ignore[arg-type]
        lesion=lesion,
    )


def _inside_ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: tuple, axes: tuple) -> np.ndarray:
    return ((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 + ((z - centre[2]) / axes[2]) ** 2 <= 1


def phantom_hu(phantom: Phantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Noise-free Hounsfield units at LPS points (any array shape)."""
    hu = np.full(np.shape(x), AIR_HU, dtype=np.float64)
    body = _inside_ellipsoid(x, y, z, phantom.centre, phantom.body_axes)
    inner_axes = tuple(axis - phantom.fat_mm for axis in phantom.body_axes)
    inner = _inside_ellipsoid(x, y, z, phantom.centre, inner_axes)
    hu[body] = FAT_HU
    hu[inner] = phantom.tissue_hu
    hu[inner & _inside_ellipsoid(x, y, z, phantom.organ_centre, phantom.organ_axes)] = phantom.organ_hu
    if phantom.lesion is not None:
        lesion = phantom.lesion
        c = lesion.centre
        sphere = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= lesion.radius_mm**2
        hu[inner & sphere] = phantom.tissue_hu + lesion.contrast_hu
    for _, finding in phantom.findings:
        c = finding.centre
        sphere = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= finding.radius_mm**2
        hu[inner & sphere] = phantom.tissue_hu + finding.contrast_hu
    spine = (x - phantom.spine_xy[0]) ** 2 + (y - phantom.spine_xy[1]) ** 2 <= phantom.spine_radius_mm**2
    hu[inner & spine] = BONE_HU  # last: a large lesion next to the spine never replaces bone
    return hu


def render_hu(phantom: Phantom, stack: SliceStack, *, noise_sd: float, noise_seed: int) -> np.ndarray:
    """The intended integer HU volume of a series, shaped (k, j, i) in position order."""
    x, y, z = stack.voxel_positions()
    noise = np.random.default_rng(noise_seed).normal(0.0, noise_sd, size=x.shape)
    return np.clip(np.rint(phantom_hu(phantom, x, y, z) + noise), HU_MIN, HU_MAX).astype(np.int16)


def render_projection(phantom: Phantom, projection: Projection, *, noise_sd: float, noise_seed: int) -> np.ndarray:
    """The intended MONOCHROME2 projection image (rows, columns), uint16 0..4095: brighter = more attenuation."""
    x, z = projection.detector_positions()
    line_integral = np.zeros(x.shape)
    for y in np.arange(projection.y_from, projection.y_to, projection.y_step):
        mu = np.maximum(phantom_hu(phantom, x, np.full(x.shape, y), z) - AIR_HU, 0.0) / 1000.0 * MU_WATER_PER_MM
        line_integral += mu * projection.y_step
    noise = np.random.default_rng(noise_seed).normal(0.0, noise_sd, size=x.shape)
    image = DX_MAX * (1.0 - np.exp(-DX_GAIN * line_integral)) + noise
    return np.clip(np.rint(image), 0, DX_MAX).astype(np.uint16)
