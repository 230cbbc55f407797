"""Monitoring of scheduled scoring: each night's inputs and outputs against the training reference and a trailing
window of earlier nights (`medtl monitor`). Above scoring in the layering: it reads what scoring wrote."""
