"""medtl: transfer learning for medical images, from DICOM / NIfTI to an audited model and a signed report."""

__version__ = "0.1.0"
