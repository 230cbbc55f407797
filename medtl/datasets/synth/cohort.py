"""`make_cohort`: a synthetic cohort of real DICOM series, NIfTI copies, labels.csv and cohort.json.

Why synthetic: the pipeline must be testable end to end, offline and without patient data, on files that look like a
PACS export (several sites and vendors, PHI in headers and in the labels spreadsheet, problem files), with a finding
that a small network can learn and whose ground truth is known exactly.

Deterministic: the same arguments write byte-identical files (UIDs derived from the seed, dates from the seed, no
clock, gzip without timestamps). The cohort is built in a hidden sibling folder and moved into place at the end, so
an interrupted run never leaves half a cohort behind.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl.datasets.synth import problems as problem_files
from medtl.datasets.synth import tasks
from medtl.datasets.synth.plan import PatientPlan, plan_cohort
from medtl.datasets.synth.tasks import SynthTask
from medtl.datasets.synth.truth import cohort_truth
from medtl.datasets.synth.writer import write_patient
from medtl.datasets.writing import staged_output, write_csv, write_json
from medtl.errors import ConfigError

LABEL_COLUMNS = ("patient_id", "study_id", "label", "site", "patient_name", "birth_date", "accession_number")


@dataclass(frozen=True)
class CohortSummary:
    """What was written; `truth` is the content of cohort.json."""

    out: Path
    seed: int
    patients: int
    positives: int
    studies: int
    series: dict[str, int]
    dicom_files: int
    nifti_files: int
    problems: list[str]
    truth: dict[str, Any] = field(repr=False)
    task: SynthTask = "binary"

    def ingest_command(self) -> str:
        """The `medtl ingest` command for this cohort, with the task declaration it needs (DATASET: your choice)."""
        options = " ".join(self.truth.get("task", {}).get("ingest_options", []))
        return (
            f"medtl ingest {self.out / 'dicom'} --labels {self.out / 'labels.csv'} "
            + (f"{options} " if options else "")
            + "--out DATASET --dev-pseudonym-key"
        )

    def label_counts(self) -> dict[str, int]:
        """Patients per grade (ordinal) or per finding (multilabel, plus 'none')."""
        counts: Counter[str] = Counter()
        for patient in self.truth["patients"]:
            if self.task == "multilabel":
                counts.update(patient["findings"] or ["none"])
            else:
                counts[str(patient["label"])] += 1
        return dict(sorted(counts.items()))

    def describe(self) -> str:
        series = ", ".join(f"{count} {kind}" for kind, count in sorted(self.series.items()))
        with_finding = {"binary": "with the finding", "ordinal": "with a lesion (grade 1 or more)"}
        lines = [
            f"Synthetic cohort written to {self.out} (seed {self.seed})",
            f"  patients: {self.patients} ({self.positives} {with_finding.get(self.task, 'with any finding')}, "
            f"{self.patients - self.positives} without); studies: {self.studies}; series: {series}",
            f"  files: {self.dicom_files} under dicom/, {self.nifti_files} NIfTI volumes under nifti/",
            "  labels.csv: one row per study (it also carries PHI-like columns that ingest must ignore)",
            "  cohort.json: ground truth (geometry, encodings, lesion parameters, problem files and their fates)",
        ]
        if self.problems:
            lines.append(f"  problem files: {', '.join(self.problems)}")
        if self.task != "binary":
            what = "grades" if self.task == "ordinal" else "findings"
            counts = ", ".join(f"{name}: {count}" for name, count in self.label_counts().items())
            lines += [
                f"  task: {self.task}; patients by {what}: {counts}",
                f"  ingest it with the task declared ({self.task} is not inferred from the labels):",
                f"    {self.ingest_command()}",
            ]
        return "\n".join(lines)


def _check(
    patients: int, seed: int, prevalence: float, difficulty: float, task: str, grades: int, findings: int
) -> None:
    problems = tasks.check_task(task, grades, findings)
    if patients < 2:
        problems.append(f"--patients must be at least 2 (got {patients})")
    if seed < 0:
        problems.append(f"--seed must be 0 or more (got {seed})")
    if not 0.0 <= prevalence <= 1.0:
        problems.append(f"--prevalence must be between 0 and 1 (got {prevalence})")
    if not 0.0 <= difficulty <= 1.0:
        problems.append(f"--difficulty must be between 0 and 1 (got {difficulty})")
    if problems:
        raise ConfigError("; ".join(problems), where="synth", fix="correct the options and run again")


def _label_rows(plans: list[PatientPlan]) -> list[dict[str, str]]:
    """One row per study, as a clinician's spreadsheet would have it (names and dates included)."""
    rows = []
    for patient in plans:
        family, given = patient.name.split("^")
        for study in patient.studies:
            rows.append(
                {
                    "patient_id": patient.patient_id,
                    "study_id": study.study_uid,
                    "label": patient.label_cell,
                    "site": patient.site.institution,
                    "patient_name": f"{family.title()}, {given.title()}",
                    "birth_date": patient.birth_date.isoformat(),
                    "accession_number": study.accession,
                }
            )
    return rows


def make_cohort(
    out: Path,
    *,
    patients: int,
    seed: int,
    prevalence: float = 0.5,
    difficulty: float = 0.3,
    with_problems: bool = False,
    task: SynthTask = "binary",
    grades: int = 5,
    findings: int = 3,
) -> CohortSummary:
    """Write a cohort into `out` (new or empty folder); see the package docstring for the layout.

    `task`: binary (one finding, present or not), ordinal (`grades` grades; grade 0 = none; `prevalence` = share with
    a lesion) or multilabel (`findings` kinds; the first on `prevalence` of the patients, each later one rarer)."""
    _check(patients, seed, prevalence, difficulty, task, grades, findings)
    plans = plan_cohort(
        patients=patients, seed=seed, prevalence=prevalence, difficulty=difficulty, task=task, grades=grades,
        findings=findings,
    )  # fmt: skip
    if with_problems:
        problem_files.assign(plans)
    out = Path(out)
    with staged_output(out, what="a synthetic cohort") as work:
        for patient in plans:
            write_patient(work, seed, patient)
        problems = problem_files.inject(work, seed, plans) if with_problems else []
        write_csv(work / "labels.csv", LABEL_COLUMNS, _label_rows(plans))
        kinds = Counter(se.kind for p in plans for st in p.studies for se in st.series)
        counts = {
            "patients": len(plans),
            "positives": sum(1 for p in plans if p.label),  # a grade of 1 or more counts once
            "studies": sum(len(p.studies) for p in plans),
            **{f"series_{kind}": kinds[kind] for kind in ("ct", "localizer", "dx")},
            "dicom_files": sum(1 for path in (work / "dicom").rglob("*") if path.is_file()),
            "nifti_files": sum(1 for _ in (work / "nifti").rglob("*.nii.gz")),
        }
        parameters = {
            "patients": patients,
            "prevalence": prevalence,
            "difficulty": difficulty,
            "with_problems": with_problems,
        }
        declared, task_lesions = None, None
        if task != "binary":
            prevalences = tasks.finding_prevalences(prevalence, findings)
            parameters["task"] = task
            parameters.update({"grades": grades} if task == "ordinal" else {"finding_prevalences": prevalences})
            decl = tasks.declaration(task, grades, findings)
            declared = {**decl.model_dump(mode="json", exclude_none=True), "ingest_options": tasks.ingest_options(decl)}
            task_lesions = tasks.lesion_model(task, difficulty, grades, prevalences)
        truth = cohort_truth(
            seed=seed, parameters=parameters, plans=plans, problems=problems, counts=counts, task=declared,
            task_lesions=task_lesions,
        )  # fmt: skip
        write_json(work / "cohort.json", truth)
    return CohortSummary(
        out=out,
        seed=seed,
        patients=counts["patients"],
        positives=counts["positives"],
        studies=counts["studies"],
        series=dict(kinds),
        dicom_files=counts["dicom_files"],
        nifti_files=counts["nifti_files"],
        problems=[problem["kind"] for problem in problems],
        truth=truth,
        task=task,
    )


__all__ = ["CohortSummary", "make_cohort"]
