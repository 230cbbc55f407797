"""Prefect flows for medtl: thin orchestration around `medtl` functions (the library never imports Prefect).

Flow parameters, logs and artifacts are a PHI sink: they carry folder locations, counts, pseudonymous ids and
content hashes, never patient names, ids or per-file paths.
"""
