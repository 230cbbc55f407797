"""Builders of input data: synthetic DICOM/NIfTI cohorts and importers of public datasets.

Everything here writes files in the same shape a hospital export has (DICOM series or NIfTI + labels.csv), so the
rest of the pipeline is exercised exactly as it is on real data.
"""
