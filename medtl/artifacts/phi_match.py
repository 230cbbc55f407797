"""How the PHI gate recognises identifiers in text: the matching rules and their false-positive guards.

Why known terms and not a generic name detector: ingest knows exactly which names, ids, birth dates, accession
numbers and paths the site's inputs held (DATASET/private/phi_terms.json); looking for those, in every rendering we
know of, catches real leaks with few false alarms. Findings show a masked form only — the gate must not itself
become a PHI sink in logs and CI output.

Matching rules (case-insensitive everywhere; the text is cut into candidates that are looked up in sets):
- names (DICOM `FAMILY^GIVEN^MIDDLE`, or free text "Given Family"): the full name as consecutive words in the
  orders given-family, family-given and given-middle-family, with 1-3 of space , ^ _ . - between the words
  ("Jane Doe", "DOE, JANE", "DOE^JANE", "jane_doe", "van der Berg"); and each single part of 3+ letters as a word:
  not touching a letter or an underscore (so "Doe2", "doe-ct" and "Doe's" match, but the given name "Max" does not
  fire on `intensity_max` nor the family name "Cross" on `cross_entropy`), and not a package pin (`black==24.1`).
  A lone part glued to a word by "_" (`novak_roc.png`) is therefore not caught. Particles (van, der, de, ...),
  honorifics, `allowed_words` (a site-reviewed list) and, unless `use_builtin_allowed_words` is false, a short list
  of training vocabulary (BUILTIN_ALLOWED_WORDS: head, best, mean, patience, ...) are never matched alone — full
  renderings of the same names still are.
- patient ids and accession numbers (4+ characters): as tokens made of letter/digit pieces joined by _ . - that
  touch no other letter or digit, and not as the fractional part of a number (id 12345 does not fire on 0.12345 or
  inside a hex hash); numeric ids also without leading zeros.
- birth dates (YYYYMMDD): any date-like number read as YYYYMMDD, Y-M-D, D-M-Y or M-D-Y with - / or . as
  separator, with or without leading zeros, not touching other digits.
- paths: any path-like run of text (no whitespace, either separator) that contains the last two parts of a source
  path; a single part (or its stem without a file extension) when it looks like an identifier — 6+ characters
  including a digit — and is neither a generic folder name nor in `allowed_words`. Parts with spaces are matched
  only through the names and ids they contain.
- any absolute path under a usual root (/home, /Users, /mnt, /data, /tmp, ..., C:\\, \\\\server, ~/) and the
  artifact folder's own full path: an artifact must not depend on, or reveal, where it was built.
Terms too short to match safely are skipped with a logged warning (counts only).
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import Any

from medtl.artifacts.extract import Segment
from medtl.artifacts.phi_terms import Finding, PhiTerms, mask

_log = logging.getLogger(__name__)

_PARTICLES = frozenset(
    {
        "van",
        "von",
        "der",
        "den",
        "del",
        "della",
        "des",
        "dos",
        "das",
        "ter",
        "ten",
        "bin",
        "ibn",
        "bint",
        "mac",
        "mrs",
        "miss",
        "prof",
        "sir",
        "jnr",
        "snr",
    }
)
# Words that training configs, metrics and model cards use on their own and that are also given or family names
# somewhere; a lone occurrence is far more likely the word than the patient. Full names are still matched.
BUILTIN_ALLOWED_WORDS = frozenset(
    {
        "head",
        "best",
        "mean",
        "max",
        "min",
        "batch",
        "cross",
        "linear",
        "patience",
        "norm",
        "bias",
        "weight",
        "adam",
        "lion",
        "dice",
        "focal",
        "train",
        "test",
        "final",
        "fold",
        "long",
        "short",
        "half",
        "float",
        "double",
        "sum",
        "pool",
        "kernel",
        "drop",
        "decay",
        "ray",
        "will",
        "may",
        "mark",
        "grant",
        "lance",
        "chase",
        "page",
    }
)
_GENERIC_DIRS = frozenset(
    {
        "home",
        "users",
        "data",
        "dataset",
        "datasets",
        "dicom",
        "nifti",
        "images",
        "export",
        "exports",
        "series",
        "studies",
        "patients",
        "scans",
        "volumes",
        "project",
        "projects",
        "shared",
        "scratch",
        "archive",
        "incoming",
        "raw_data",
        "pacs_export",
    }
)
_ABSOLUTE_ROOTS = (
    "home",
    "Users",
    "mnt",
    "media",
    "data",
    "srv",
    "tmp",
    "var",
    "opt",
    "root",
    "scratch",
    "net",
    "nfs",
    "private",
    "Volumes",
    "gpfs",
    "lustre",
    "work",
    "shared",
    "storage",
    "projects",
    "archive",
    "pacs",
)
_PATH_CHARS = r"[^\s\"'<>|*?\x00]"  # what may follow a root; \x00 separates scanned segments
_ABSOLUTE_PATH = re.compile(
    r"(?<![\w.:/\\~-])/(?:" + "|".join(_ABSOLUTE_ROOTS) + r")(?:/[^\s\"'<>|*?/\x00]+)+"
    r"|(?<![\w])[A-Za-z]:[\\/]" + _PATH_CHARS + "+"
    r"|(?<![\w\\])\\\\[\w.-]+\\" + _PATH_CHARS + "+"
    r"|(?<![\w/])~/" + _PATH_CHARS + "+"
)
_NAME_GAP = re.compile(r"[\s,^_.\-]{1,3}")  # between the words of a full name: "DOE, JANE", "DOE^JANE", "jane_doe"
_WORD = re.compile(r"[^\W\d_]+")  # a maximal run of letters
_TOKEN = re.compile(r"[^\W_]+(?:[_.\-][^\W_]+)*")  # ids, accession numbers, path parts: alnum pieces joined by _ . -
_PIECE = re.compile(r"[^\W_]+")
_PATH_RUN = re.compile(r"[^\s\"'<>|*?,;=()\[\]{}\x00]+")
_DATE = re.compile(r"(?<!\d)(?:(\d{1,4})([-/.])(\d{1,2})\2(\d{1,4})|(\d{8}))(?!\d)")
_SEGMENT_JOIN = "\x00"  # between segments: no pattern can match across it


def _words(text: str) -> list[str]:
    return [word.casefold() for word in _WORD.findall(text)]


def _name_terms(raw: str, allowed: set[str]) -> tuple[set[tuple[str, ...]], set[str]]:
    """(full renderings as word tuples, single name parts) of one DICOM PN or free-text name."""
    first_group = raw.split("=")[0]
    if "^" in first_group:
        parts = [part.strip() for part in first_group.split("^")] + ["", "", ""]
        family, given, middle = _words(parts[0]), _words(parts[1]), _words(parts[2])
    else:  # free text: "Given [Middle] Family"
        words = _words(first_group)
        family, given, middle = (words[-1:], words[:1], words[1:-1]) if len(words) > 1 else (words, [], [])
    full: set[tuple[str, ...]] = set()
    if family and given:
        full |= {(*given, *family), (*family, *given)}
        if middle:
            full.add((*given, *middle, *family))
    singles = {
        word for word in family + given + middle if len(word) >= 3 and word not in _PARTICLES and word not in allowed
    }
    return full, singles


def _id_terms(raw: str) -> set[str]:
    value = raw.strip().casefold()
    variants = {value} if len(value) >= 4 else set()
    if value.isdigit() and len(value.lstrip("0")) >= 4:
        variants.add(value.lstrip("0"))
    return variants


def _path_terms(raw: str, allowed: set[str]) -> tuple[set[tuple[str, str]], set[str]]:
    """(last two parts, distinctive single parts or stems) of one source path."""
    parts = [part.casefold() for part in raw.strip().replace("\\", "/").split("/") if part not in ("", ".", "..")]
    pairs = {(parts[-2], parts[-1])} if len(parts) >= 2 else set()
    tokens = set()
    for part in parts:
        stem = PurePosixPath(part).stem if re.search(r"\.[a-z][a-z0-9]{0,4}$", part) else part
        for candidate in (part, stem):
            if len(candidate) >= 6 and re.search(r"\d", candidate) and candidate not in _GENERIC_DIRS | allowed:
                tokens.add(candidate)
    return pairs, tokens


def _date_keys(match: re.Match[str]) -> set[str]:
    """Every YYYYMMDD that a date-like match can stand for (Y-M-D, D.M.Y, M/D/Y, ...)."""
    if match.group(5):
        return {match.group(5)}
    first, _, second, third = match.group(1, 2, 3, 4)
    if len(first) == 4:
        candidates = [(first, second, third)]
    elif len(third) == 4:
        candidates = [(third, second, first), (third, first, second)]
    else:
        return set()
    return {f"{y}{int(m):02d}{int(d):02d}" for y, m, d in candidates if len(m) <= 2 and len(d) <= 2}


class PhiMatcher:
    """Lookup tables for one PhiTerms: build once, scan many files.

    Why sets, not one big regular expression: a cohort has thousands of names and tens of thousands of file paths;
    a regex over all of them takes minutes to compile. Instead the text is cut into candidate words, tokens, dates
    and path runs, and each candidate is looked up.
    """

    def __init__(self, terms: PhiTerms, *, extra_paths: Iterable[str] = ()) -> None:
        allowed = {word.casefold() for word in terms.allowed_words}
        if terms.use_builtin_allowed_words:
            allowed |= BUILTIN_ALLOWED_WORDS
        self._full_names: set[tuple[str, ...]] = set()
        self._name_parts: set[str] = set()
        for name in terms.patient_names:
            full, singles = _name_terms(name, allowed)
            self._full_names |= full
            self._name_parts |= singles
        self._longest_name = max((len(words) for words in self._full_names), default=0)
        self._tokens: dict[str, str] = {}  # token -> kind
        self._path_pairs: set[tuple[str, str]] = set()
        for raw in terms.paths:
            pairs, tokens = _path_terms(raw, allowed)
            self._path_pairs |= pairs
            self._tokens.update(dict.fromkeys(tokens, "source_path_part"))
        for kind, values in (("accession_number", terms.accession_numbers), ("patient_id", terms.patient_ids)):
            for raw in values:
                self._tokens.update(dict.fromkeys(_id_terms(raw), kind))
        self._longest_token = max((len(_PIECE.findall(token)) for token in self._tokens), default=0)
        self._odd = [t for t in self._tokens if not _TOKEN.fullmatch(t)]  # ids with other characters: substring
        self._dates = {raw.strip() for raw in terms.birth_dates if re.fullmatch(r"\d{8}", raw.strip())}
        self._own = [p.replace("\\", "/").rstrip("/").casefold() for p in extra_paths if p]
        skipped = sum(1 for raw in terms.patient_ids + terms.accession_numbers if len(raw.strip()) < 4)
        skipped += len(terms.birth_dates) - len(self._dates)
        if skipped:
            _log.warning("PHI gate: %d id/date term(s) too short or malformed to match safely were skipped", skipped)

    def _names(self, text: str) -> Iterator[tuple[int, int, str]]:
        words = list(_WORD.finditer(text))
        for index, word in enumerate(words):
            value = word.group().casefold()
            before, after = text[word.start() - 1 : word.start()], text[word.end() : word.end() + 2]
            if value in self._name_parts and before != "_" and not after.startswith(("_", "==")):
                yield word.start(), word.end(), "patient_name_part"
            sequence = [value]
            for nxt in range(index + 1, min(index + self._longest_name, len(words))):
                if not _NAME_GAP.fullmatch(text, words[nxt - 1].end(), words[nxt].start()):
                    break
                sequence.append(words[nxt].group().casefold())
                if tuple(sequence) in self._full_names:
                    yield word.start(), words[nxt].end(), "patient_name"

    def _ids(self, text: str) -> Iterator[tuple[int, int, str]]:
        for run in _TOKEN.finditer(text):
            pieces = list(_PIECE.finditer(text, run.start(), run.end()))
            for first, piece in enumerate(pieces):
                start = piece.start()
                if start >= 2 and text[start - 1] in ".," and text[start - 2].isdigit():
                    continue  # the fractional part of a number
                for last in range(first, min(first + self._longest_token, len(pieces))):
                    end = pieces[last].end()
                    kind = self._tokens.get(text[start:end].casefold())
                    if kind and not (text[end : end + 1] in (".", ",") and text[end + 1 : end + 2].isdigit()):
                        yield start, end, kind
        folded = text.casefold()
        for token in self._odd:
            position = folded.find(token)
            while position >= 0:
                yield position, position + len(token), self._tokens[token]
                position = folded.find(token, position + 1)

    def _paths(self, text: str) -> Iterator[tuple[int, int, str]]:
        if self._path_pairs:
            for run in _PATH_RUN.finditer(text):
                value = run.group().replace("\\", "/").casefold()
                if "/" not in value:
                    continue
                parts = value.split("/")
                if any((parts[i], parts[i + 1]) in self._path_pairs for i in range(len(parts) - 1)):
                    yield run.start(), run.end(), "source_path"  # the whole path is what must go
        if self._own:
            folded = text.replace("\\", "/").casefold()
            for own in self._own:
                position = folded.find(own)
                while position >= 0:
                    yield position, position + len(own), "source_path"
                    position = folded.find(own, position + 1)

    def _birth_dates(self, text: str) -> Iterator[tuple[int, int, str]]:
        if self._dates:
            for match in _DATE.finditer(text):
                if _date_keys(match) & self._dates:
                    yield match.start(), match.end(), "birth_date"

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, kind) of every hit; a hit inside an earlier, longer one is dropped."""
        hits = [*self._names(text), *self._ids(text), *self._paths(text), *self._birth_dates(text)]
        hits += [(m.start(), m.end(), "absolute_path") for m in _ABSOLUTE_PATH.finditer(text)]
        hits.sort(key=lambda hit: (hit[0], hit[0] - hit[1]))
        kept: list[tuple[int, int, str]] = []
        for hit in hits:
            if not kept or hit[0] >= kept[-1][1]:
                kept.append(hit)
        return kept

    def scan_segments(self, file: str, segments: list[Segment]) -> list[Finding]:
        if not segments:
            return []
        starts, pieces, offset = [], [], 0
        for segment in segments:
            starts.append(offset)
            piece = segment.text.replace(_SEGMENT_JOIN, " ")
            pieces.append(piece)
            offset += len(piece) + 1
        blob = _SEGMENT_JOIN.join(pieces)
        findings = []
        for start, end, kind in self.find(blob):
            segment = segments[bisect.bisect_right(starts, start) - 1]
            findings.append(Finding(file, kind, segment.location, mask(blob[start:end])))
        return findings

    def scan_value(self, value: Any, *, where: str) -> list[Finding]:
        """Scan a JSON-like value (e.g. an audit event payload) before it is written."""
        text = json.dumps(value, ensure_ascii=False, default=str)
        return self.scan_segments(where, [Segment("value", text)])
