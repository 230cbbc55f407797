"""The cohort plan: every random choice of a synthetic cohort, made up front from the seed.

Why a plan before any file is written: the writers stay free of randomness (so output is byte-identical for a seed),
problems can be assigned to series before they are written, and cohort.json is simply the plan serialised.
Each patient draws from its own random stream ([seed, 1, patient index]), so adding patients does not change the
earlier patients' ids, headers or geometry. Labels are drawn once for the whole cohort ([seed, 0]) so that the
number of positives is exactly round(prevalence * patients). Graded and multi-finding cohorts: see tasks.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from medtl.datasets.synth import tasks
from medtl.datasets.synth.geometry import AXIAL, CORONAL, SAGITTAL, Projection, SliceStack, axial_rotated
from medtl.datasets.synth.phantom import Phantom, draw_phantom
from medtl.datasets.writing import derived_uid

SeriesKind = Literal["ct", "localizer", "dx"]
InstanceOrder = Literal["ascending", "descending", "shuffled"]
Layout = Literal["standard", "flat", "fileset"]
CT_SIZE, LOCALIZER_SIZE, DX_SIZE = 64, 64, 128
MAX_LESION_RADIUS_MM = 8.1  # nominal radius at difficulty 0 (7 mm) with the +15 % jitter
_BASE_DATE = dt.date(2018, 1, 1)

FAMILY_NAMES = (
    "SMITH",
    "GARCIA",
    "MULLER",
    "ROSSI",
    "NGUYEN",
    "KOWALSKI",
    "OKAFOR",
    "TANAKA",
    "SILVA",
    "JOHANSSON",
    "DUBOIS",
    "PATEL",
    "MURPHY",
    "COHEN",
    "NOVAK",
    "HASSAN",
    "LINDQVIST",
    "MORENO",
)
GIVEN_NAMES = {
    "F": ("ANNA", "MARIA", "SOFIA", "YUKI", "AMARA", "LENA", "CLAIRE", "PRIYA", "EVA", "NORA"),
    "M": ("JOHN", "LUCA", "OMAR", "KENJI", "PIOTR", "DAVID", "ARJUN", "TOMAS", "ERIK", "SAMUEL"),
}


@dataclass(frozen=True)
class Encoding:
    """How a scanner stores HU: stored = (HU - intercept) / slope."""

    name: str
    pixel_representation: int  # 1 = signed int16, 0 = uint16
    bits_stored: int
    slope: float
    intercept: float


INT16 = Encoding("int16", 1, 16, 1.0, 0.0)
UINT16_12BIT = Encoding("uint16-12bit", 0, 12, 1.0, -1024.0)
UINT16 = Encoding("uint16", 0, 16, 1.0, -1024.0)
UINT16_HALF = Encoding("uint16-slope0.5", 0, 16, 0.5, -1024.0)


@dataclass(frozen=True)
class Site:
    institution: str
    manufacturer: str
    model: str
    encoding: Encoding
    referring: str  # ReferringPhysicianName: one fake referrer per site


SITES = (
    Site("St. Elsewhere General Hospital", "Acme Medical Systems", "Tomoscan 64", INT16, "WELBY^MARCUS"),
    Site("Northfield University Clinic", "Orion Imaging", "OrionCT Vista", UINT16_12BIT, "QUINN^MICHAELA"),
    Site("Harbour Valley Medical Centre", "Kestrel Healthcare", "KX-900", UINT16, "OKONKWO^ADA"),
)


@dataclass
class SeriesPlan:
    kind: SeriesKind
    series_uid: str
    series_number: int
    description: str
    noise_sd: float
    noise_seed: int
    encoding: Encoding
    stack: SliceStack | None = None  # ct and localizer
    projection: Projection | None = None  # dx
    frame_of_reference_uid: str | None = None
    slice_thickness: float | None = None
    instance_order: InstanceOrder = "ascending"
    instance_numbers: list[int] = field(default_factory=list)  # per position k
    sop_uids: list[str] = field(default_factory=list)  # per position k
    photometric: str = "MONOCHROME2"
    transfer_syntax: str = "1.2.840.10008.1.2.1"  # Explicit VR Little Endian
    missing_positions: list[int] = field(default_factory=list)
    nifti_qform_mismatch: bool = False
    files: dict[int, str] = field(default_factory=dict)  # position k -> path relative to the cohort folder
    nifti_file: str | None = None
    value_range: tuple[int, int] | None = None  # min, max of the intended values (HU, or the DX image)


@dataclass
class StudyPlan:
    study_uid: str
    study_id: str
    accession: str
    date: dt.date
    time: str
    description: str
    series: list[SeriesPlan]


@dataclass
class PatientPlan:
    index: int
    patient_id: str
    name: str
    sex: str
    birth_date: dt.date
    site: Site
    label: int
    phantom: Phantom
    studies: list[StudyPlan]
    layout: Layout = "standard"
    task: tasks.SynthTask = "binary"
    findings: tuple[str, ...] = ()  # multilabel: the patient's findings (label is then 1 when there is any)

    @property
    def label_cell(self) -> str:
        """The patient's label as labels.csv writes it."""
        return tasks.label_cell(self.task, self.label, self.findings)


def _instance_numbers(rng: np.random.Generator, order: InstanceOrder, n: int) -> list[int]:
    if order == "ascending":
        return list(range(1, n + 1))
    if order == "descending":
        return list(range(n, 0, -1))
    return [int(v) + 1 for v in rng.permutation(n)]


def _ct_series(rng: np.random.Generator, phantom: Phantom, site: Site, uid_key: tuple, ct_index: int) -> SeriesPlan:
    pixel_spacing = round(float(rng.uniform(0.6, 0.9)), 3)
    slice_spacing = round(float(rng.uniform(2.0, 3.0)), 2)
    slices = int(rng.integers(20, 41))
    rotated = rng.uniform() < 0.2 or ct_index == 2
    angle = round(float(rng.uniform(10, 35) * rng.choice([-1, 1])), 1)
    orientation = axial_rotated(angle) if rotated else AXIAL
    # Keep the whole focus sphere (the largest possible lesion) inside the z coverage.
    room = max(0.0, (slices - 1) * slice_spacing / 2 - MAX_LESION_RADIUS_MM - slice_spacing)
    centre = np.array(
        [
            phantom.centre[0] + rng.uniform(-2, 2),
            phantom.centre[1] + rng.uniform(-2, 2),
            phantom.focus[2] + rng.uniform(-room, room),
        ]
    ).round(2)
    stack = SliceStack.centred(
        centre, orientation, pixel_spacing=pixel_spacing, slice_spacing=slice_spacing, size=CT_SIZE, slices=slices
    )
    drawn = str(rng.choice(["ascending", "descending", "shuffled"], p=[0.4, 0.3, 0.3]))
    order: InstanceOrder = ("shuffled", "descending")[ct_index] if ct_index < 2 else drawn  # type: ignore[assignment]
    series_uid = derived_uid(*uid_key, "series", 2)
    return SeriesPlan(
        kind="ct",
        series_uid=series_uid,
        series_number=2,
        description=f"AXIAL {slice_spacing:.1f}mm SOFT TISSUE",
        noise_sd=round(float(rng.uniform(10, 15)), 1),
        noise_seed=int(rng.integers(2**31)),
        encoding=UINT16_HALF if ct_index == 1 else site.encoding,
        stack=stack,
        slice_thickness=slice_spacing + (0.5 if rng.uniform() < 0.3 else 0.0),
        instance_order=order,
        instance_numbers=_instance_numbers(rng, order, slices),
        sop_uids=[derived_uid(series_uid, "instance", k) for k in range(slices)],
    )


def _localizer(rng: np.random.Generator, phantom: Phantom, site: Site, uid_key: tuple) -> SeriesPlan:
    sagittal = rng.uniform() < 0.5
    slices = int(rng.integers(1, 4))
    centre = np.array([phantom.centre[0], phantom.centre[1], phantom.focus[2] + rng.uniform(-10, 10)]).round(2)
    stack = SliceStack.centred(
        centre,
        SAGITTAL if sagittal else CORONAL,
        pixel_spacing=2.0,
        slice_spacing=5.0,
        size=LOCALIZER_SIZE,
        slices=slices,
    )
    series_uid = derived_uid(*uid_key, "series", 1)
    return SeriesPlan(
        kind="localizer",
        series_uid=series_uid,
        series_number=1,
        description="SCOUT SAGITTAL" if sagittal else "SCOUT CORONAL",
        noise_sd=round(float(rng.uniform(10, 15)), 1),
        noise_seed=int(rng.integers(2**31)),
        encoding=site.encoding,
        stack=stack,
        slice_thickness=2.0,
        instance_numbers=list(range(1, slices + 1)),
        sop_uids=[derived_uid(series_uid, "instance", k) for k in range(slices)],
    )


def _dx(rng: np.random.Generator, phantom: Phantom, uid_key: tuple, monochrome1: bool) -> SeriesPlan:
    projection = Projection(
        centre_x=round(phantom.centre[0] + float(rng.uniform(-2, 2)), 2),
        centre_z=round(phantom.focus[2] + float(rng.uniform(-10, 10)), 2),
        pixel_spacing=0.5,
        size=DX_SIZE,
        y_from=round(phantom.centre[1] - 20.0, 2),
        y_to=round(phantom.centre[1] + 20.0, 2),
        y_step=0.5,
    )
    series_uid = derived_uid(*uid_key, "series", 3)
    return SeriesPlan(
        kind="dx",
        series_uid=series_uid,
        series_number=3,
        description="CHEST AP",
        noise_sd=6.0,
        noise_seed=int(rng.integers(2**31)),
        encoding=Encoding("uint16-12bit-dx", 0, 12, 1.0, 0.0),
        projection=projection,
        photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2",
        instance_numbers=[1],
        sop_uids=[derived_uid(series_uid, "instance", 0)],
    )


def _patient_id(rng: np.random.Generator, taken: set[str]) -> str:
    number = int(rng.integers(10**6, 10**7))
    while f"MRN{number:07d}" in taken:
        number = number % (10**7 - 1) + 1
    taken.add(f"MRN{number:07d}")
    return f"MRN{number:07d}"


def plan_cohort(
    *,
    patients: int,
    seed: int,
    prevalence: float,
    difficulty: float,
    task: tasks.SynthTask = "binary",
    grades: int = 5,
    findings: int = 3,
) -> list[PatientPlan]:
    """Draw every patient, study and series; guarantees at least one of each variant the tests rely on.

    `task`: binary (lesion or not), ordinal (`grades` grades, 0 = none) or multilabel (`findings` finding kinds)."""
    n_positive = int(np.floor(prevalence * patients + 0.5))
    positives = set(np.random.default_rng([seed, 0]).permutation(patients)[:n_positive].tolist())
    grade = tasks.grades_of(patients, seed, prevalence, grades) if task == "ordinal" else None
    present = (
        tasks.findings_of_patients(patients, seed, tasks.finding_prevalences(prevalence, findings))
        if task == "multilabel"
        else None
    )
    plans: list[PatientPlan] = []
    taken: set[str] = set()
    ct_index = dx_index = 0
    for index in range(patients):
        rng = np.random.default_rng([seed, 1, index])
        sex = "F" if rng.uniform() < 0.5 else "M"
        site = SITES[int(rng.integers(len(SITES)))]
        patient_id = _patient_id(rng, taken)
        name = f"{rng.choice(FAMILY_NAMES)}^{rng.choice(GIVEN_NAMES[sex])}"
        age = int(rng.integers(25, 86))
        label, size, brightness = int(index in positives), 1.0, 1.0
        if grade is not None:
            label = grade[index]
            size, brightness = tasks.grade_factors(max(label, 1), grades)
        if present is not None:
            label = int(bool(present[index]))
        phantom = draw_phantom(
            rng, positive=label > 0 and present is None, difficulty=difficulty, size=size, brightness=brightness
        )
        if present is not None:
            placed = tasks.place_findings(phantom, present[index], seed=seed, index=index, difficulty=difficulty)
            phantom = replace(phantom, findings=placed)
        n_studies = 2 if (index == 1 or rng.uniform() < 0.2) else 1
        has_dx = index == 0 or rng.uniform() < 0.3
        first_date = _BASE_DATE + dt.timedelta(days=int(rng.integers(0, 1500)))
        studies = []
        for study_index in range(n_studies):
            date = first_date + dt.timedelta(days=int(rng.integers(90, 400)) if study_index else 0)
            uid_key = (seed, patient_id, study_index)
            series = [_localizer(rng, phantom, site, uid_key), _ct_series(rng, phantom, site, uid_key, ct_index)]
            ct_index += 1
            for item in series:
                item.frame_of_reference_uid = derived_uid(*uid_key, "frame-of-reference")
            if has_dx and study_index == 0:
                series.append(_dx(rng, phantom, uid_key, monochrome1=dx_index % 2 == 0))
                dx_index += 1
            studies.append(
                StudyPlan(
                    study_uid=derived_uid(*uid_key, "study"),
                    study_id=str(int(rng.integers(1000, 99999))),
                    accession=f"ACC{int(rng.integers(10**7, 10**8))}",
                    date=date,
                    time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(60)):02d}{int(rng.integers(60)):02d}",
                    description="CT CHEST WITHOUT CONTRAST" if study_index == 0 else "CT CHEST FOLLOW-UP",
                    series=series,
                )
            )
        birth = first_date - dt.timedelta(days=365 * age + int(rng.integers(0, 365)))
        chosen = present[index] if present is not None else ()
        plan = PatientPlan(
            index, patient_id, name, sex, birth, site, label, phantom, studies, task=task, findings=chosen
        )
        plans.append(plan)
    return plans


def age_at(birth: dt.date, date: dt.date) -> int:
    return date.year - birth.year - ((date.month, date.day) < (birth.month, birth.day))
