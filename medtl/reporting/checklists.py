"""Where the report answers each reporting-checklist item: CLAIM 2024 and TRIPOD+AI, mapped to section anchors.

Why a table in code: reviewers and journals ask "where is item N?", and the answer must follow the report's real
structure. A test checks that every anchor named here exists in the rendered HTML, so a renamed section cannot leave
a dangling reference. Item texts are short paraphrases in our own words, not the checklists' wording; item numbers
follow CLAIM 2024 (Tejani et al., Radiology: Artificial Intelligence 2024) and TRIPOD+AI (Collins et al., BMJ 2024).
Items about the manuscript itself (abstract, funding, registration, ...) are not listed: a model report cannot
answer them.
"""

from __future__ import annotations

from dataclasses import dataclass

# Report sections in reading order: anchor id -> heading. The template uses these headings, the appendix links them.
SECTIONS: dict[str, str] = {
    "summary": "Summary",
    "intended-use": "Intended use",
    "cohort": "Cohort",
    "headline": "Headline performance",
    "calibration-verdict": "Calibration in one line",
    "key-limitations": "Key limitations",
    "provenance": "Provenance",
    "methods": "How these numbers were obtained",
    "recipe": "How the training recipe was chosen",
    "metrics": "Detailed metrics",
    "endpoints": "Results per decision (class, grade cut or finding)",
    "curves": "ROC and precision-recall curves",
    "decision-curves": "Decision curves: does acting on the model help?",
    "distributions": "Predicted probabilities per true class",
    "seed-spread": "Seed-to-seed spread",
    "confusion": "Confusion matrices",
    "calibration": "Calibration",
    "subgroups": "Subgroups",
    "transfer": "Did transfer help?",
    "label-efficiency": "Label efficiency",
    "failures": "Failure cases",
    "limitations": "Limitations",
    "signoff": "Clinical sign-off",
    "checklists": "Appendix: reporting checklists",
}


@dataclass(frozen=True)
class Item:
    guideline: str
    number: str
    topic: str  # our paraphrase of what the item asks for
    anchors: tuple[str, ...]


CLAIM = "CLAIM 2024"
TRIPOD = "TRIPOD+AI"

ITEMS: tuple[Item, ...] = (
    Item(CLAIM, "1", "Identify the work as an AI method and name the technique", ("summary", "provenance")),
    Item(CLAIM, "3", "Clinical background and intended use of the model", ("intended-use",)),
    Item(CLAIM, "7", "Where the data came from", ("cohort", "provenance")),
    Item(CLAIM, "8", "Inclusion and exclusion of patients and scans", ("cohort",)),
    Item(CLAIM, "11", "How the data were de-identified", ("methods", "failures")),
    Item(CLAIM, "12", "How missing or unusable data were handled", ("cohort",)),
    Item(CLAIM, "14", "Reference standard (ground truth) and its definition", ("methods", "cohort")),
    Item(CLAIM, "20", "How data were split into partitions", ("methods",)),
    Item(CLAIM, "21", "Partitions disjoint at patient level", ("methods", "cohort")),
    Item(CLAIM, "22", "Model description", ("provenance", "transfer")),
    Item(CLAIM, "24", "Initialisation of parameters, incl. pretrained weights (transfer learning)", ("provenance",)),
    Item(CLAIM, "25", "Training approach", ("methods", "recipe", "transfer")),
    Item(CLAIM, "28", "Performance metrics", ("headline", "metrics", "endpoints", "curves", "confusion")),
    Item(CLAIM, "29", "Uncertainty of the estimates (confidence intervals)", ("headline", "metrics")),
    Item(CLAIM, "30", "Robustness: calibration and performance across subgroups", ("calibration", "subgroups")),
    Item(CLAIM, "31", "Explainability methods and their status", ("failures",)),
    Item(CLAIM, "34", "Characteristics of the cohort and its partitions", ("cohort",)),
    Item(CLAIM, "37", "Estimates of diagnostic accuracy with their precision", ("headline", "metrics", "endpoints")),
    Item(CLAIM, "38", "Failure analysis of incorrectly classified cases", ("failures",)),
    Item(CLAIM, "39", "Limitations, incl. bias and generalisability", ("key-limitations", "limitations")),
    Item(CLAIM, "43", "Where the model, code and data provenance can be found", ("provenance",)),
    Item(TRIPOD, "3b", "Target population, place in the care pathway, intended users", ("intended-use",)),
    Item(TRIPOD, "5a", "Source of data", ("cohort", "provenance")),
    Item(TRIPOD, "6", "Participants: setting and eligibility", ("cohort",)),
    Item(TRIPOD, "8a", "Outcome: what is predicted and how it was established", ("intended-use", "methods")),
    Item(TRIPOD, "9", "Predictors: the images (modality, kind) and their preprocessing", ("cohort", "provenance")),
    Item(TRIPOD, "10", "Sample size", ("cohort", "metrics")),
    Item(TRIPOD, "11", "Missing data and excluded scans", ("cohort",)),
    Item(TRIPOD, "12", "Analysis methods: data use, model, internal validation", ("methods",)),
    Item(TRIPOD, "12e", "Performance measures: discrimination and calibration", ("metrics", "calibration")),
    Item(
        TRIPOD, "12f", "Model updating: recalibration and transfer from a pretrained model", ("calibration", "transfer")
    ),
    Item(TRIPOD, "13", "Class imbalance: prevalence and how it was handled", ("cohort", "metrics", "endpoints")),
    Item(TRIPOD, "14", "Fairness: performance across groups", ("subgroups",)),
    Item(TRIPOD, "23a", "Model performance with confidence intervals", ("headline", "metrics", "calibration")),
    Item(TRIPOD, "23b", "Heterogeneity of performance across groups", ("subgroups",)),
    Item(TRIPOD, "24", "Results of model updating (transfer learning)", ("transfer",)),
    Item(TRIPOD, "26", "Limitations", ("key-limitations", "limitations")),
)
