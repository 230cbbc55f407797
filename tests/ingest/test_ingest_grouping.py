"""Series -> scans on headers alone: 4D splits, echoes, duplicates, localizers and the SOP class allow-list."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from medtl.ingest.header_pass import _shared
from medtl.io.dicom.grouping import group_headers
from medtl.io.dicom.headers import DicomHeader, values_of
from medtl.io.dicom.sop import classify_sop

CT = "1.2.840.10008.5.1.4.1.1.2"


def header(index: int, z: float, **overrides: object) -> DicomHeader:
    base = DicomHeader(
        path=Path(f"/in/{index:04d}"),
        size=1000,
        sop_class_uid=CT,
        sop_instance_uid=f"1.2.3.{index}",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        patient_id="P1",
        study_uid="1.2.9",
        series_uid="1.2.10",
        accession_number="A1",
        patient_name="DOE^JOHN",
        birth_date="19600101",
        modality="CT",
        manufacturer=None,
        manufacturer_model=None,
        body_part=None,
        sex="M",
        patient_age=None,
        study_date=None,
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        rows=16,
        columns=16,
        number_of_frames=1,
        photometric="MONOCHROME2",
        position=(0.0, 0.0, z),
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        pixel_spacing=(1.0, 1.0),
        imager_pixel_spacing=None,
        patient_orientation=(),
        instance_number=index,
        acquisition_number=1,
        echo_number=None,
        temporal_position=None,
        trigger_time=None,
        acquisition_time=None,
        gantry_tilt=None,
    )
    return base._replace(**overrides)


def test_repeated_positions_without_temporal_tags_become_one_volume_per_time_point():
    # like the GE 4D fMRI series: 3 time points x 5 positions, only InstanceNumber orders time
    headers = [header(t * 5 + k + 1, z=2.0 * k) for t in range(3) for k in range(5)]
    result = group_headers(reversed(headers))
    assert result.fates == []
    assert len(result.plans) == 3
    for t, plan in enumerate(sorted(result.plans, key=lambda p: p.volume_index)):
        assert plan.volume_index == t and plan.volumes_in_series == 3
        assert [h.instance_number for h in plan.headers] == [t * 5 + k + 1 for k in range(5)]
        assert "split_repeated_positions" in plan.flags


def test_temporal_position_identifier_and_echoes_split_a_series():
    headers = [
        header(100 * e + 10 * t + k, z=float(k), echo_number=e, temporal_position=t)
        for e in (1, 2)
        for t in (1, 2)
        for k in range(4)
    ]
    plans = group_headers(headers).plans
    assert len(plans) == 4
    assert {len(p.headers) for p in plans} == {4}
    assert {(p.headers[0].echo_number, p.headers[0].temporal_position) for p in plans} == {
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    }


def test_inconsistent_repeats_are_quarantined_not_guessed():
    headers = [header(k, z=float(k)) for k in range(5)] + [header(99, z=2.0)]
    result = group_headers(headers)
    assert result.plans == []
    assert {f.reason_code for f in result.fates} == {"inconsistent_repeated_positions"}
    assert len(result.fates) == 6


def test_identical_copies_are_skipped_once_read():
    original = header(1, z=0.0)
    copy = original._replace(path=Path("/in/zz-copy"))
    result = group_headers([copy, original, header(2, z=1.0)])
    assert [(f.header.path.name, f.status, f.reason_code) for f in result.fates] == [
        ("zz-copy", "skipped", "duplicate_instance")
    ]
    assert len(result.plans) == 1 and [h.path.name for h in result.plans[0].headers] == ["0001", "0002"]


def test_kept_copies_keep_the_path_order_of_their_first_copy():
    """Projection images are one scan each, in the order of their files: a duplicated one keeps its first copy's
    place among the others, whatever order the headers came in."""
    dx = "1.2.840.10008.5.1.4.1.1.1.1"
    images = [header(i, z=0.0, sop_class_uid=dx, path=Path(f"/in/{name}")) for i, name in enumerate("abc")]
    copy = images[1]._replace(path=Path("/in/zz-copy-of-b"))
    result = group_headers([images[2], copy, images[0], images[1]])
    assert [plan.headers[0].path.name for plan in result.plans] == ["a", "b", "c"]
    assert [(f.header.path.name, f.reason_code) for f in result.fates] == [("zz-copy-of-b", "duplicate_instance")]


def test_copies_that_differ_are_all_quarantined():
    original = header(1, z=0.0)
    altered = original._replace(path=Path("/in/aa-altered"), size=2000)
    result = group_headers([original, altered, header(2, z=1.0), header(3, z=2.0)])
    assert sorted((f.header.path.name, f.status, f.reason_code) for f in result.fates) == [
        ("0001", "quarantined", "conflicting_duplicate_instance"),
        ("aa-altered", "quarantined", "conflicting_duplicate_instance"),
    ]
    assert [h.instance_number for h in result.plans[0].headers] == [2, 3]


def test_localizer_missing_patient_and_missing_geometry():
    result = group_headers(
        [
            header(1, z=0.0, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")),
            header(2, z=0.0, patient_id=""),
            header(3, z=0.0, position=None),
        ]
    )
    assert sorted((f.status, f.reason_code) for f in result.fates) == [
        ("quarantined", "missing_geometry"),
        ("quarantined", "missing_patient_id"),
        ("skipped", "localizer"),
    ]


@pytest.mark.parametrize(
    ("uid", "code"),
    [
        ("1.2.840.10008.1.3.10", "dicomdir"),
        ("1.2.840.10008.5.1.4.1.1.88.33", "structured_report"),
        ("1.2.840.10008.5.1.4.1.1.88.59", "key_object_selection"),
        ("1.2.840.10008.5.1.4.1.1.11.1", "presentation_state"),
        ("1.2.840.10008.5.1.4.1.1.66.4", "segmentation"),
        ("1.2.840.10008.5.1.4.1.1.481.3", "rt_structure_set"),
        ("1.2.840.10008.5.1.4.1.1.104.1", "encapsulated_document"),
        ("1.2.840.10008.5.1.4.1.1.9.1.1", "waveform"),
        ("1.2.840.10008.5.1.4.1.1.3.1", "cine_unsupported"),
        (None, "missing_sop_class"),
    ],
)
def test_non_images_are_skipped_with_their_reason(uid, code):
    decision = classify_sop(uid)
    assert decision.handling == "skip"
    assert decision.reason_code == code


@pytest.mark.parametrize(
    ("uid", "handling"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "stack"),
        ("1.2.840.10008.5.1.4.1.1.4", "stack"),
        ("1.2.840.10008.5.1.4.1.1.2.1", "enhanced"),
        ("1.2.840.10008.5.1.4.1.1.4.1", "enhanced"),
        ("1.2.840.10008.5.1.4.1.1.1", "planar"),
        ("1.2.840.10008.5.1.4.1.1.1.1", "planar"),
        ("1.2.840.10008.5.1.4.1.1.6.1", "planar"),
        ("1.2.840.10008.5.1.4.1.1.7", "planar"),
    ],
)
def test_image_classes_are_allowed(uid, handling):
    assert classify_sop(uid).handling == handling


def test_a_multiframe_planar_object_is_a_cine_loop():
    assert classify_sop("1.2.840.10008.5.1.4.1.1.6.1", number_of_frames=30).reason_code == "cine_unsupported"


def test_a_header_chunk_sends_each_repeated_value_once_and_every_value_unchanged():
    # equal texts made as separate objects (as a worker parses them, file by file)
    headers = [
        header(i, z=float(i), series_uid="".join(["1.2.", "10"]), patient_name="".join(["DOE^", "JOHN"]))
        for i in range(1, 9)
    ]
    described = [(1000, "dicom", values_of(h), None, None, None) for h in headers] + [
        (5, "other", None, None, None, None)
    ]
    shared = _shared(described)
    assert shared == described  # the same values, in the same places
    series = {id(values[DicomHeader._fields.index("series_uid") - 1]) for _, _, values, *_ in shared[:-1]}
    assert len(series) == 1  # one object for the whole chunk
    saved = len(pickle.dumps(described)) - len(pickle.dumps(shared))
    assert saved >= 7 * len("1.2.10" + "DOE^JOHN")  # the seven repeats of each are references now
    positions = [values[DicomHeader._fields.index("position") - 1] for _, _, values, *_ in shared[:-1]]
    assert positions == [(0.0, 0.0, float(i)) for i in range(1, 9)]  # a value of each file stays its own
