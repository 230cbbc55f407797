"""Synthetic cohorts: real DICOM series (+ NIfTI copies), labels.csv and a ground-truth cohort.json.

Layout written by `make_cohort(OUT, ...)`:

    OUT/dicom/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<InstanceNumber>.dcm   (most patients)
    OUT/dicom/unsorted/<hex>                     one patient's files, flat, no suffix     (with_problems)
    OUT/dicom/media/DICOMDIR + PT*/ST*/SE*/IM*   one patient as a DICOM File-set          (with_problems)
    OUT/nifti/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>.nii.gz (+ .json sidecar)  axial CT volumes
    OUT/labels.csv    one row per study: patient_id, study_id, label, site + PHI-like columns ingest must ignore
                      (label: 0/1; the grade for --task ordinal; "nodule|cyst" or "none" for --task multilabel)
    OUT/cohort.json   ground truth (see medtl.datasets.synth.truth)

Modules: geometry (conventions, slice stacks), phantom (the body and finding), plan (every random choice),
tasks (graded and multi-finding cohorts: grades, finding kinds, the task declaration to ingest with), dicom_series
(DICOM datasets), writer (files and layouts), problems (planted problem files), truth (cohort.json), cohort
(`make_cohort`). Apart from cohorts: archive (`make_archive`, `medtl synth-archive`: thousands of small CT and MR
series in several transfer syntaxes with an expected outcome per file, for measuring ingest at scale) and cli.
"""

from medtl.datasets.synth.cohort import CohortSummary, make_cohort
from medtl.datasets.synth.truth import expected_values, iter_series, load_cohort

__all__ = ["CohortSummary", "expected_values", "iter_series", "load_cohort", "make_cohort"]
