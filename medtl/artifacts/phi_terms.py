"""The identifiers to look for (PhiTerms, from DATASET/private/phi_terms.json) and what the gate reports (Finding).

Neither may leak what it protects: PhiTerms prints counts only, and a Finding carries the matched text masked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, ValidationError

from medtl.contracts.base import Strict
from medtl.errors import ConfigError


class PhiTerms(Strict):
    """Identifiers from the input headers (site-private; written by ingest to DATASET/private/phi_terms.json)."""

    patient_names: list[str] = Field(default_factory=list)
    patient_ids: list[str] = Field(default_factory=list)
    birth_dates: list[str] = Field(default_factory=list)
    accession_numbers: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    # Site-reviewed words never flagged as a single name part (e.g. "adam" when an optimizer shares the name).
    allowed_words: list[str] = Field(default_factory=list)
    use_builtin_allowed_words: bool = True

    @classmethod
    def load(cls, path: str | Path) -> PhiTerms:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                "the PHI terms file does not exist",
                where=path.name,
                fix="run ingest first (it writes DATASET/private/phi_terms.json), or pass PhiTerms.empty() for data "
                "that never had identifiers",
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError("the PHI terms file is not valid JSON", where=path.name) from None
        try:
            return cls.model_validate(data)
        except ValidationError as error:  # never echo the values: they are PHI
            places = ", ".join(".".join(str(p) for p in item["loc"]) + f" ({item['msg']})" for item in error.errors())
            raise ConfigError(f"the PHI terms file is malformed: {places}", where=path.name) from None

    @classmethod
    def empty(cls) -> PhiTerms:
        """For synthetic or public data without identifiers: only the generic absolute-path rule runs."""
        return cls()

    @classmethod
    def merged(cls, parts: list[PhiTerms]) -> PhiTerms:
        """The terms of several datasets (an artifact built from all of them must hold none of their identifiers);
        a word is allowed only when every part allows it."""
        kinds = ("patient_names", "patient_ids", "birth_dates", "accession_numbers", "paths")
        allowed = set.intersection(*(set(part.allowed_words) for part in parts)) if parts else set()
        return cls(
            **{kind: sorted({term for part in parts for term in getattr(part, kind)}) for kind in kinds},
            allowed_words=sorted(allowed),
            use_builtin_allowed_words=all(part.use_builtin_allowed_words for part in parts),
        )

    def counts(self) -> dict[str, int]:
        kinds = ("patient_names", "patient_ids", "birth_dates", "accession_numbers", "paths")
        return {name: len(getattr(self, name)) for name in kinds}

    def __repr__(self) -> str:  # repr/str must not leak the terms into logs or test output
        return f"PhiTerms({self.counts()})"

    __str__ = __repr__


@dataclass(frozen=True)
class Finding:
    """One hit: which file, what kind of term, where in the file; the text itself only masked."""

    file: str
    kind: str
    location: str
    masked: str = ""

    def __str__(self) -> str:
        shown = f" {self.masked!r}" if self.masked else ""
        return f"{self.file}: {self.location}: {self.kind}{shown}"


def mask(text: str) -> str:
    """Keep the first character of every letter/digit run and the separators: 'Jane Doe' → 'J*** D**'."""
    masked = re.sub(r"(?<=[^\W_])[^\W_]", "*", text)
    return masked if len(masked) <= 48 else masked[:45] + "..."
