"""Slice ordering, spacing, gaps and tilt from positions; affines that map voxels to the right place."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtl.io.geometry import LPS_TO_RAS, analyse_stack, lps_affine, slice_normal, to_canonical

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _rotation(angle_z: float, angle_x: float) -> np.ndarray:
    cz, sz, cx, sx = np.cos(angle_z), np.sin(angle_z), np.cos(angle_x), np.sin(angle_x)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ rx


@settings(max_examples=40, deadline=None)
@given(
    angle_z=st.floats(-np.pi, np.pi),
    angle_x=st.floats(-1.2, 1.2),
    spacing=st.floats(0.5, 6.0),
    n=st.integers(2, 30),
    seed=st.integers(0, 10_000),
)
def test_stack_is_sorted_along_normal_whatever_the_input_order(angle_z, angle_x, spacing, n, seed):
    rotation = _rotation(angle_z, angle_x)
    orientation = tuple(rotation[:, 0]) + tuple(rotation[:, 1])
    normal = slice_normal(orientation)
    origin = np.array([12.0, -40.0, 7.5])
    positions = [origin + k * spacing * normal for k in range(n)]
    shuffled = np.random.default_rng(seed).permutation(n)
    geometry = analyse_stack([positions[i] for i in shuffled], orientation)
    assert [int(shuffled[i]) for i in geometry.order] == list(range(n))
    assert geometry.spacing == pytest.approx(spacing, rel=1e-6)
    assert geometry.flags == []
    assert np.allclose(geometry.step, spacing * normal)


def test_missing_slice_is_a_gap_and_uneven_steps_are_flagged():
    positions = [(0, 0, z) for z in (0.0, 2.5, 5.0, 10.0, 12.5)]
    assert "slice_gap" in analyse_stack(positions, AXIAL).flags
    uneven = [(0, 0, z) for z in (0.0, 2.5, 5.2, 7.5, 10.0)]
    flags = analyse_stack(uneven, AXIAL).flags
    assert "nonuniform_spacing" in flags and "slice_gap" not in flags


def test_gantry_tilt_is_detected_and_kept_in_the_affine():
    tilt = np.radians(15)
    positions = [(0.0, k * 3.0 * np.sin(tilt), k * 3.0 * np.cos(tilt)) for k in range(6)]
    geometry = analyse_stack(positions, AXIAL)
    assert "gantry_tilt" in geometry.flags
    assert geometry.tilt_degrees == pytest.approx(15.0, abs=0.01)
    affine = lps_affine(AXIAL, (0.7, 0.8), positions[0], geometry.step)
    # voxel (0, 0, 5) must land exactly on the sixth slice's position, shear included
    assert np.allclose(affine @ [0, 0, 5, 1], [*positions[5], 1])


def test_lps_affine_uses_pixel_spacing_rows_then_columns():
    # PixelSpacing = (between rows, between columns); moving along a row (column index i) uses the column spacing
    affine = lps_affine(AXIAL, (0.5, 0.9), (10.0, 20.0, 30.0), (0.0, 0.0, 2.0))
    assert np.allclose(affine @ [1, 0, 0, 1], [10.9, 20.0, 30.0, 1])
    assert np.allclose(affine @ [0, 1, 0, 1], [10.0, 20.5, 30.0, 1])
    assert np.allclose(affine @ [0, 0, 1, 1], [10.0, 20.0, 32.0, 1])


def test_canonical_orientation_flips_lps_axial_to_ras_and_keeps_world_positions():
    array = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    affine = LPS_TO_RAS @ lps_affine(AXIAL, (1.0, 2.0), (5.0, 6.0, 7.0), (0, 0, 3.0))
    canonical, new_affine, codes = to_canonical(array, affine)
    assert codes == "RAS"
    assert canonical.shape == array.shape
    # every voxel value sits at the same world position before and after
    for index in [(0, 0, 0), (3, 2, 1), (1, 2, 0)]:
        world = affine @ [*index, 1]
        new_index = np.round(np.linalg.inv(new_affine) @ world).astype(int)[:3]
        assert canonical[tuple(new_index)] == array[index]


@settings(max_examples=200, deadline=None)
@given(
    rotvec=st.lists(st.floats(-3.2, 3.2), min_size=3, max_size=3),
    scale=st.floats(0.0, 1.0),
    permutation=st.permutations([0, 1, 2]),
    flips=st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3),
    zooms=st.lists(st.floats(0.2, 8.0), min_size=3, max_size=3),
)
def test_orientation_is_nibabels_for_any_rotation(rotvec, scale, permutation, flips, zooms):
    """Axis-aligned, slightly oblique and strongly oblique affines (rotations of any size about any axis)."""
    import nibabel.orientations as nio
    from scipy.spatial.transform import Rotation

    from medtl.io.geometry import orientation

    rotation = Rotation.from_rotvec(np.asarray(rotvec) * scale**3).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = (np.eye(3)[list(permutation)] * np.asarray(flips)) @ rotation * np.asarray(zooms)
    np.testing.assert_array_equal(orientation(affine), nio.io_orientation(affine))


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.one_of(st.floats(-50.0, 50.0), st.just(0.0), st.just(2.5)), min_size=1, max_size=60),
       with_nan=st.booleans())  # fmt: skip
def test_a_stacks_median_step_is_numpys_to_the_bit(steps, with_nan):
    from medtl.io.geometry import _median

    values = np.asarray(steps + ([float("nan")] if with_nan else []), dtype=float)
    expected, found = float(np.median(values)), _median(values)
    assert found == expected or (np.isnan(expected) and np.isnan(found))
