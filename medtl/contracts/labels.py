"""Contract for the clinicians' labels file (CSV), one row per labelled patient, study or series."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator

from medtl.contracts.base import ContractModel

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+\-]*"
# A class name, or for multi-label tasks several finding names separated by "|" ("none": no finding).
LABEL_PATTERN = rf"^{_NAME}(?:\|{_NAME})*$"
KEY_COLUMNS = ("patient_id", "study_id", "series_id")
KNOWN_COLUMNS = (*KEY_COLUMNS, "label", "split", "site")


class LabelRow(ContractModel):
    """One row of labels.csv.

    Keys are the identifiers the site's spreadsheet already has: `patient_id` (PatientID in the DICOM header, or
    the patient folder of NIfTI files) is required; `study_id` (StudyInstanceUID or AccessionNumber) and
    `series_id` (SeriesInstanceUID) narrow a label to one study or series. Other columns are allowed, ignored, and
    never copied into any output: spreadsheets often carry names and dates.
    """

    contract_name: ClassVar[str] = "labels"
    contract_unit: ClassVar[str] = "rows"
    contract_title: ClassVar[str] = "labels.csv: one labelled patient, study or series per row"
    model_config = ConfigDict(extra="allow")

    patient_id: str = Field(min_length=1, description="the patient identifier as in the DICOM PatientID tag")
    study_id: str | None = Field(None, description="StudyInstanceUID or AccessionNumber; empty = all studies")
    series_id: str | None = Field(None, description="SeriesInstanceUID; empty = all series of the study/patient")
    label: str = Field(
        pattern=LABEL_PATTERN,
        description="class name, e.g. 0/1 or benign/malignant; multi-label: findings separated by | "
        "(effusion|nodule), or none",
    )
    split: Literal["train", "val", "test"] | None = Field(
        None, description="an official or locked split; 'test' is never used for training or model selection"
    )
    site: str | None = Field(None, description="acquiring site, used for subgroup analysis")

    @field_validator("patient_id", "study_id", "series_id", "label", "site", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        if isinstance(value, float) and value.is_integer():
            value = str(int(value))
        if isinstance(value, (int,)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return value or None
        return value
