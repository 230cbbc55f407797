"""The clinician's evaluation report: self-contained HTML and PDF rendered from the evaluation results."""
