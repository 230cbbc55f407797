"""Graded and multi-finding cohorts: who has which grade or findings, and how each looks in the phantom.

Why apart from plan.py: a binary cohort must stay byte-identical for a seed, so its random streams are left exactly as
they were. Task choices draw from streams of their own: labels from [seed, 0] (the binary positives, so an ordinal
cohort's patients with a lesion are the binary cohort's positives) and [seed, 0, 1 + finding index]; finding geometry
from [seed, 2, patient index].

- ordinal: grade 0 is "no lesion"; grades 1..G-1 are the binary lesion with its radius and contrast scaled up with
  the grade, so the order is visible (a larger, more conspicuous sphere is a higher grade). Patients with a lesion
  are spread evenly over the grades.
- multilabel: up to four distinct finding kinds, told apart by location, size and intensity, each present on its
  own exact share of patients, independently of the others (so some patients have several, some none). They sit in
  the plane of the focus point, where every series of the patient (CT, localizer, X-ray) sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medtl.contracts.task import NO_FINDING, TaskDeclaration, default_decision_cut
from medtl.datasets.synth.phantom import Lesion, Phantom, lesion_size_and_contrast

SynthTask = Literal["binary", "ordinal", "multilabel"]
SYNTH_TASKS: tuple[SynthTask, ...] = ("binary", "ordinal", "multilabel")
MAX_GRADES = 8
PREVALENCE_STEP = 0.2  # finding k's prevalence is prevalence * (1 - k * step): findings differ in how common they are


@dataclass(frozen=True)
class FindingKind:
    """One kind of finding: where it sits (fractions of the body's in-plane semi-axes from its centre), how large
    and how bright it is at difficulty 0 (both shrink with difficulty as the binary lesion does)."""

    name: str
    offset: tuple[float, float]
    radius_mm: float
    contrast_hu: float  # signed: > 0 brighter than soft tissue

    def to_truth(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "offset_of_body_axes_xy": list(self.offset),
            "radius_mm_at_difficulty_0": self.radius_mm,
            "contrast_hu_at_difficulty_0": self.contrast_hu,
        }


FINDING_KINDS = (
    FindingKind("nodule", (0.45, -0.3), 3.5, 250.0),  # bright, small, to one side at the front
    FindingKind("cyst", (-0.45, -0.3), 4.0, -200.0),  # dark (fluid), on the other side
    FindingKind("calcification", (0.0, -0.55), 2.0, 700.0),  # tiny, bone-bright, at the front in the midline
    FindingKind("mass", (0.0, 0.05), 3.5, 120.0),  # faint and central, in front of the spine
)


def check_task(task: str, grades: int, findings: int) -> list[str]:
    """Problems with the task options, in the words of the CLI options."""
    problems = []
    if task not in SYNTH_TASKS:
        problems.append(f"--task must be one of {', '.join(SYNTH_TASKS)} (got {task!r})")
    if task == "ordinal" and not 3 <= grades <= MAX_GRADES:
        problems.append(f"--grades must be between 3 and {MAX_GRADES} (got {grades}); two grades are a binary task")
    if task == "multilabel" and not 2 <= findings <= len(FINDING_KINDS):
        problems.append(f"--findings must be between 2 and {len(FINDING_KINDS)} (got {findings}); one is a binary task")
    return problems


def exact_count(share: float, patients: int) -> int:
    return int(np.floor(share * patients + 0.5))


def grades_of(patients: int, seed: int, prevalence: float, grades: int) -> list[int]:
    """Grade per patient: the binary cohort's positives (same stream), spread evenly over grades 1..G-1."""
    chosen = np.random.default_rng([seed, 0]).permutation(patients)[: exact_count(prevalence, patients)]
    grade = [0] * patients
    for rank, index in enumerate(chosen.tolist()):
        grade[index] = 1 + rank % (grades - 1)
    return grade


def grade_factors(grade: int, grades: int) -> tuple[float, float]:
    """(radius, contrast) multipliers of the binary lesion for a grade: the top grade is the binary lesion."""
    t = grade / (grades - 1)
    return 0.5 + 0.5 * t, 0.4 + 0.6 * t


def finding_prevalences(prevalence: float, findings: int) -> list[float]:
    return [round(prevalence * (1 - k * PREVALENCE_STEP), 4) for k in range(findings)]


def findings_of_patients(patients: int, seed: int, prevalences: list[float]) -> list[tuple[str, ...]]:
    """Each finding on exactly round(prevalence x patients) patients, drawn independently per finding."""
    present: list[list[str]] = [[] for _ in range(patients)]
    for k, share in enumerate(prevalences):
        chosen = np.random.default_rng([seed, 0, 1 + k]).permutation(patients)[: exact_count(share, patients)]
        for index in sorted(chosen.tolist()):
            present[index].append(FINDING_KINDS[k].name)
    return [tuple(names) for names in present]


def place_findings(
    phantom: Phantom, names: tuple[str, ...], *, seed: int, index: int, difficulty: float
) -> tuple[tuple[str, Lesion], ...]:
    """The named findings of one patient, in the focus plane, jittered a little (their own random stream)."""
    rng = np.random.default_rng([seed, 2, index])
    scale_r, scale_c = (now / easy for now, easy in zip(lesion_size_and_contrast(difficulty),
                                                        lesion_size_and_contrast(0.0), strict=True))  # fmt: skip
    placed = []
    for kind in FINDING_KINDS:
        jitter = rng.uniform(-1, 1, size=3), rng.uniform(0.9, 1.1, size=2)  # drawn for every kind: stable streams
        if kind.name not in names:
            continue
        (dx, dy, dz), (size, contrast) = jitter
        centre = (
            round(phantom.centre[0] + kind.offset[0] * phantom.body_axes[0] + 0.5 * dx, 2),
            round(phantom.centre[1] + kind.offset[1] * phantom.body_axes[1] + 0.5 * dy, 2),
            round(phantom.focus[2] + dz, 2),
        )
        lesion = Lesion(
            centre, round(kind.radius_mm * scale_r * size, 2), round(kind.contrast_hu * scale_c * contrast, 1)
        )
        placed.append((kind.name, lesion))
    return tuple(placed)


def classes_of(task: SynthTask, grades: int, findings: int) -> list[str]:
    if task == "ordinal":
        return [str(grade) for grade in range(grades)]
    if task == "multilabel":
        return [kind.name for kind in FINDING_KINDS[:findings]]
    return ["0", "1"]


def label_cell(task: SynthTask, label: int, names: tuple[str, ...]) -> str:
    """The labels.csv cell: the grade, or the findings separated by '|' ('none' for none)."""
    if task == "multilabel":
        return "|".join(names) or NO_FINDING
    return str(label)


def declaration(task: SynthTask, grades: int, findings: int) -> TaskDeclaration | None:
    """What `medtl ingest` must be told about this cohort (None: binary, which needs no declaration)."""
    if task == "binary":
        return None
    classes = classes_of(task, grades, findings)
    cut = default_decision_cut(classes) if task == "ordinal" else None
    return TaskDeclaration(kind=task, classes=classes, decision_cut=cut)


def ingest_options(declared: TaskDeclaration | None) -> list[str]:
    """The `medtl ingest` options that write this declaration as the dataset's task.json."""
    if declared is None:
        return []
    options = ["--task-kind", declared.kind, "--classes", ",".join(declared.classes or [])]
    if declared.decision_cut is not None:
        options += ["--decision-cut", declared.decision_cut]
    return options


def lesion_model(task: SynthTask, difficulty: float, grades: int, prevalences: list[float]) -> dict[str, Any]:
    """cohort.json's extra lesion description for a graded or multi-finding cohort."""
    radius, contrast = lesion_size_and_contrast(difficulty)
    if task == "ordinal":
        rows = []
        for grade in range(1, grades):
            size, brightness = grade_factors(grade, grades)
            rows.append(
                {
                    "grade": grade,
                    "nominal_radius_mm": round(radius * size, 3),
                    "nominal_abs_contrast_hu": round(contrast * brightness, 3),
                }
            )
        return {"grade_0": "no lesion", "grades": rows, "rule": "radius and |contrast| rise with the grade"}
    return {
        "findings": [
            {**kind.to_truth(), "prevalence": share} for kind, share in zip(FINDING_KINDS, prevalences, strict=False)
        ],
        "rule": "independent findings, each on exactly round(prevalence x patients) patients; all in the focus plane",
        "jitter": "centre +-0.5 mm in-plane, +-1 mm in z; radius and contrast x0.9 to x1.1",
    }
