"""The PHI gate: find the identifiers that the input headers contained anywhere in a folder, before it is sealed.

Why known terms and not a generic name detector: ingest knows exactly which names, ids, birth dates, accession
numbers and paths the site's inputs held (DATASET/private/phi_terms.json); looking for those, in every rendering we
know of (rules: phi_match.py), catches real leaks with few false alarms. Every file is read by a format-aware reader
(extract.py); formats that cannot be checked, or that unpickle, are findings too. Findings show a masked form only:
the gate must not itself become a PHI sink in logs and CI output.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medtl.artifacts.extract import FormatProblem, Segment, extract_segments
from medtl.artifacts.layout import ALLOWED_SUFFIXES, PICKLE_SUFFIXES, SIGNATURE, walk_files
from medtl.artifacts.phi_match import BUILTIN_ALLOWED_WORDS, PhiMatcher
from medtl.artifacts.phi_terms import Finding, PhiTerms, mask
from medtl.errors import PHIError

__all__ = [
    "BUILTIN_ALLOWED_WORDS",
    "Finding",
    "PhiMatcher",
    "PhiTerms",
    "mask",
    "raise_on_findings",
    "scan_file",
    "scan_for_phi",
]


def scan_file(path: Path, relative: str, matcher: PhiMatcher) -> list[Finding]:
    findings = matcher.scan_segments(relative, [Segment("file name", relative)])
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return [*findings, Finding(relative, "pickle", f"{suffix} files unpickle (execute code) when loaded")]
    if suffix not in ALLOWED_SUFFIXES:
        return [*findings, Finding(relative, "unsupported_format", f"{suffix or '(no extension)'} is not allowed")]
    try:
        segments = extract_segments(path)
    except FormatProblem as problem:
        return [*findings, Finding(relative, problem.kind, problem.reason)]
    return findings + matcher.scan_segments(relative, segments)


def scan_for_phi(folder: str | Path, terms: PhiTerms, *, exclude: Iterable[str] = ()) -> list[Finding]:
    """Every finding in every file under `folder` (file names included); an empty list means the gate passes."""
    folder = Path(folder)
    own_location = {str(folder.absolute()), str(folder.resolve())}
    matcher = PhiMatcher(terms, extra_paths=own_location)
    skip = {SIGNATURE, *exclude}  # the signature is 64 random bytes, not a format
    findings: list[Finding] = []
    for relative in walk_files(folder):
        if relative not in skip:
            findings.extend(scan_file(folder / relative, relative, matcher))
    return findings


def raise_on_findings(findings: list[Finding], *, where: str, max_listed: int = 20) -> None:
    if not findings:
        return
    listed = "\n".join(f"  - {finding}" for finding in findings[:max_listed])
    more = f"\n  ... and {len(findings) - max_listed} more" if len(findings) > max_listed else ""
    raise PHIError(
        f"the PHI gate found {len(findings)} problem(s) and refused:\n{listed}{more}",
        where=where,
        fix="write pseudonymous ids and content hashes only, remove original paths and free text copied from "
        "headers, store files in allowed formats; if a single name or path part is a common word here (e.g. the "
        "model's name), add it to allowed_words in phi_terms.json after review",
    )
