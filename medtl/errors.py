"""One error hierarchy for medtl.

Every error carries three parts so that a user who meets it at 3 a.m. on a hospital server knows what to do:
what was wrong, where (file id, series / patient pseudonym, config key), and how to fix it. Messages never include
PHI: callers pass pseudonymous ids and file ids, never names or original paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class MedTLError(Exception):
    """Base class: catch this to handle any medtl failure; the CLI turns it into a clean message and exit code."""

    exit_code: int = 1
    transient: bool = False  # True where trying again later can succeed (a network outage), so flows may retry

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.what
        if self.where:
            text += f" [{self.where}]"
        if self.fix:
            text += f"\n  What to do: {self.fix}"
        return text


def describe_validation_error(error: Exception, *, root: str = "config") -> str:
    """A pydantic ValidationError as one line per problem: `key.path: message` (for config-style errors)."""
    problems = getattr(error, "errors", lambda: [])()
    return "; ".join(f"{'.'.join(map(str, item['loc'])) or root}: {item['msg']}" for item in problems) or str(error)


class ConfigError(MedTLError):
    """A configuration file, CLI option or flow parameter is invalid."""

    exit_code = 2


class RegistryError(MedTLError):
    """An explicit registry (backbones, weight sources, readers) was misused."""


class UnknownNameError(RegistryError):
    """A name that is not registered; the message suggests the closest registered names."""


class DuplicateNameError(RegistryError):
    """A name registered twice: registries are explicit, so the second registration is a bug."""


@dataclass(frozen=True)
class ContractProblem:
    """One violation of a data contract, precise enough to find and fix the offending value."""

    location: str  # e.g. "row 12, column 'label'" or "$.folds[0].train"
    rule: str  # what the contract requires
    value: str | None = None  # the offending value, already made safe to print (never PHI)

    def __str__(self) -> str:
        shown = f" (value: {self.value})" if self.value is not None else ""
        return f"{self.location}: {self.rule}{shown}"


class DataContractError(MedTLError):
    """A file crossing a stage boundary does not follow its contract in data_contracts/; lists every problem."""

    exit_code = 4

    def __init__(
        self,
        contract: str,
        problems: Sequence[ContractProblem],
        *,
        where: str | None = None,
        fix: str | None = None,
        max_listed: int = 50,
    ) -> None:
        self.contract = contract
        self.problems = list(problems)
        listed = "\n".join(f"  - {p}" for p in self.problems[:max_listed])
        more = len(self.problems) - max_listed
        if more > 0:
            listed += f"\n  ... and {more} more"
        what = f"{len(self.problems)} problem(s) with the {contract} contract:\n{listed}"
        super().__init__(
            what,
            where=where,
            fix=fix or f"correct the file so that it follows data_contracts/{contract} (see data_contracts/README.md)",
        )


class LabelsError(DataContractError):
    """The labels file is unusable (missing columns, unparseable); problems joining it to scans go to the report."""


class PseudonymKeyError(ConfigError):
    """No site secret to derive pseudonymous ids from."""


class IngestError(MedTLError):
    """Ingest cannot proceed at all (bad source, unwritable output). Bad single files are quarantined instead."""


class ReadError(MedTLError):
    """One file or series could not be read; ingest records it as quarantined and goes on."""

    reason_code: str = "decode_failed"  # the code the ingest report gives the quarantined file(s)


class LimitExceededError(ReadError):
    """A file declares (or decompresses to) more than a configured ingest limit allows: refused before allocation.

    The message names the limit and how to raise it; it never quotes header values, only byte and pixel counts.
    """

    def __init__(self, what: str, *, reason_code: str, where: str | None = None, fix: str | None = None) -> None:
        self.reason_code = reason_code
        super().__init__(what, where=where, fix=fix)


class LeakageError(MedTLError):
    """A patient appears on both sides of a split: any metric computed on it would be optimistic."""

    exit_code = 5


class WeightsError(MedTLError):
    """Pretrained weights are missing, do not match their expected hash, or do not fit the model."""


class TrainingError(MedTLError):
    """Training could not finish: a process training a fold died; the folds that finished are kept for a re-run."""


class ArtifactIntegrityError(MedTLError):
    """A model artifact differs from what was sealed: a hash, the signature or the audit chain does not match."""

    exit_code = 6


class NotApprovedError(MedTLError):
    """An artifact without a clinician's approval was asked to score; scoring must be told explicitly."""

    exit_code = 8


class PHIError(MedTLError):
    """Protected health information was found where none may be (outputs, artifacts, logs)."""

    exit_code = 7


class SourceError(MedTLError):
    """A scan source (a folder, or a PACS over DICOMweb / DIMSE) cannot be used as configured."""


class SourceUnavailableError(SourceError):
    """The PACS did not answer (refused, reset, timed out, 5xx on every try). Nothing is lost: what was pulled and
    processed is recorded, and the next run resumes from there."""

    transient = True
    exit_code = 9


class SourceAuthError(SourceError):
    """The PACS refused the credentials or this application entity."""

    exit_code = 10


class DriftAlertError(MedTLError):
    """Monitoring found the latest night of scheduled scoring drifted from the training reference or from the
    trailing window: the outputs are written; the exit code lets a scheduler notify someone."""

    exit_code = 11
