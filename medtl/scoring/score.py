"""`medtl score`: verified artifact + new scans -> scores.parquet (+ DICOM SR), idempotent and resumable.

The scans go through the same ingest code with the artifact's own preprocessing spec (read from the artifact,
never re-typed), so scoring sees exactly what training saw. Rows are keyed by (input content hash, artifact hash):
a re-run adds nothing already scored, and an interrupted run continues where it stopped, chunk by chunk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as safetensors_load

from medtl.artifacts import TrustSettings, VerifiedArtifact, open_verified
from medtl.artifacts.contents import ArtifactContents
from medtl.contracts import read_table, write_table
from medtl.contracts.artifact import AuditEvent, TaskSpec
from medtl.contracts.base import table_contract
from medtl.contracts.evaluation import ScoreRow
from medtl.contracts.handoff import ScoredPayload, evaluated_payload
from medtl.contracts.ingest import Fingerprint, ManifestRow
from medtl.errors import ConfigError, ContractProblem, DataContractError, NotApprovedError
from medtl.hashing import sha256_file, sha256_json
from medtl.identity import Pseudonymizer
from medtl.ingest.cache import ScanCache
from medtl.ingest.pipeline import MANIFEST, ingest_sources
from medtl.ingest.preprocess import spec_hash
from medtl.ingest.tensors import checked_tensor
from medtl.models.factory import model_structure
from medtl.models.loaded import LoadedModel, load_model
from medtl.progress import Progress
from medtl.scoring.inputs import record_inputs
from medtl.scoring.ood import input_flags
from medtl.scoring.policy import Policy
from medtl.training.augment import AugmentConfig, resolve_flip_axes
from medtl.training.feature_ood import KnnReference, collected, tapped
from medtl.training.feature_reference import FeatureReference, feature_rule, head_module

log = logging.getLogger(__name__)
SCORES = "scores.parquet"
PARTS = "parts"  # one Parquet file per scored chunk until they are merged into scores.parquet
STAGING = "ingest"  # the new scans, ingested with the artifact's spec
OOD_FLAGS = ("kind_mismatch", "modality_unseen", "spacing_out_of_range", "shape_out_of_range",
             "intensity_out_of_range", "feature_outlier")  # fmt: skip
DAMAGED_INPUT = "input_damaged"  # the scan's cached tensor and array no longer hold what ingest made: not scored


@dataclass
class Scorer:
    """Everything fixed for a scoring run: the verified model, its decision policy, its reference distributions."""

    artifact: VerifiedArtifact
    model: LoadedModel
    policy: Policy  # the task and its thresholds (approved, or provisional when scoring unapproved)
    approved: bool
    fingerprint: Fingerprint
    reference: FeatureReference
    head: torch.nn.Module
    knn: KnnReference | None = None  # the multi-layer rule that sets feature_outlier; None: artifacts sealed before it

    @property
    def threshold(self) -> float | None:
        """The decision endpoint's threshold (binary, ordinal), on the model's own probability scale."""
        return self.policy.threshold

    @property
    def temperature(self) -> float | None:
        return self.policy.temperature

    @property
    def image_kind(self) -> str:
        return self.artifact.metadata["input"]["image_kind"]

    @property
    def modalities(self) -> list[str]:
        return list(self.artifact.metadata["input"]["modalities"])


def prepare(
    artifact: Path, *, allow_unapproved: bool = False, trust: TrustSettings | None = None, registry: Path | None = None
) -> Scorer:
    """Verify the artifact (integrity, trust and approval, as decisions.judge decides) before touching any scan;
    with a service `registry`, also that it is the artifact in service now."""
    verified = open_verified(artifact, trust=trust)
    if registry is not None:
        from medtl.artifacts.service import require_in_service

        require_in_service(verified, registry)
    status = verified.status
    if not status.approved and not allow_unapproved:
        state = "was rejected" if status.state == "rejected" else "has no valid clinician approval"
        ignored = f" ({len(status.ignored)} event(s) in its log do not count; `medtl verify` lists why)"
        raise NotApprovedError(
            f"the artifact {state}: it may not score patients' scans" + (ignored if status.ignored else ""),
            where=verified.folder.name,
            fix="run `medtl evaluate` and have a clinician `medtl approve` it with a key listed in "
            "MEDTL_APPROVER_KEYS; for tests and research, pass --allow-unapproved (the outputs are then marked "
            "unapproved)",
        )
    model = load_model(verified)
    policy = artifact_policy(verified)
    contents = ArtifactContents(verified)
    tensors, summary = safetensors_load(contents.ood_tensors()), contents.ood_summary
    reference = FeatureReference.from_parts(tensors, summary.model_dump())
    fingerprint = contents.fingerprint
    built = model_structure(verified.metadata["model"])  # names only: the weights are the loaded model's
    head = head_module(model.networks[0], built.head_params)
    knn = feature_rule(verified.folder.name, built, tensors, summary)
    return Scorer(verified, model, policy, status.approved, fingerprint, reference, head, knn)


def artifact_policy(verified: VerifiedArtifact) -> Policy:
    """The policy scoring decides with, from the artifact alone (no weights loaded): monitoring applies the same one
    to the out-of-fold predictions, so that a night's positive rate and its reference are measured alike."""
    status = verified.status
    evaluation = status.evaluation if status.approved else status.latest_evaluation
    return decision_policy(ArtifactContents(verified).task, status.thresholds, evaluation)


def decision_policy(
    task: TaskSpec,
    thresholds: Callable[[str | None], dict[str, float]],
    evaluation: AuditEvent | None,
) -> Policy:
    """The artifact's task with the thresholds the approval status gives (the approved ones, else provisional)."""
    policy = Policy(task.kind, list(task.classes), task.positive_class, task.decision_cut)
    temperature = evaluated_payload(evaluation).temperature if evaluation is not None else None
    if temperature is not None and task.kind != "binary":
        log.warning("the evaluation's temperature applies to binary probabilities only; %s scores are reported "
                    "unscaled", task.kind)  # fmt: skip
        temperature = None
    decision = policy.decision
    return replace(policy, thresholds=thresholds(decision.id if decision else None), temperature=temperature)


@dataclass
class ScoreResult:
    out: Path
    scored: int
    skipped_existing: int
    abstained: int
    flagged: int
    approved: bool
    reports: list[Path] = field(default_factory=list)  # the DICOM SRs of these inputs, built now or kept (same content)
    trusted: bool = False
    sr_omitted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # series id -> attributes left out of its SR
    sr_failed: dict[str, str] = field(default_factory=dict)  # series id -> why it has no SR

    def describe(self) -> str:
        note = "" if self.approved else " (UNAPPROVED artifact: decisions are provisional)"
        note += "" if self.trusted else " (UNTRUSTED artifact: development only)"
        return (
            f"scored {self.scored} scan(s), {self.skipped_existing} already scored before, {self.flagged} flagged, "
            f"{self.abstained} abstained{note}{describe_sr(self.sr_omitted, self.sr_failed)}\nwrote {self.out / SCORES}"
        )


def describe_sr(omitted: dict[str, tuple[str, ...]], failed: dict[str, str]) -> str:
    """What SR writing left out or could not do; attributes by keyword (the values stay in the source files)."""
    text = ""
    if omitted:
        listed = ", ".join(f"{keyword} ({n})" for keyword, n in omitted_counts(omitted).items())
        text += f"\n{len(omitted)} SR(s) written without invalid source attribute(s): {listed}"
    if failed:
        text += f"\n{len(failed)} series have no SR (see the log for why)"
    return text


def omitted_counts(omitted: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """How many series' SRs left out each attribute: what the audit log and the summary record (keywords only)."""
    counts: dict[str, int] = {}
    for keywords in omitted.values():
        for keyword in keywords:
            counts[keyword] = counts.get(keyword, 0) + 1
    return dict(sorted(counts.items()))


def stage_inputs(
    scorer: Scorer,
    sources: Sequence[Path],
    out: Path,
    *,
    pseudonymizer: Pseudonymizer,
    workers: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Ingest the new scans with the artifact's own spec into `out/ingest`; returns their manifest rows."""
    ingested = ingest_sources(
        sources, out=out / STAGING, spec=scorer.model.spec, pseudonymizer=pseudonymizer, workers=workers,
        progress=progress,
    )  # fmt: skip
    if ingested.fingerprint.pseudonym_key_id != scorer.fingerprint.pseudonym_key_id:
        log.warning("the pseudonym key differs from training's: these ids do not link to the training data's")
    manifest = read_table(ManifestRow, out / STAGING / MANIFEST)
    record_inputs(manifest, out)  # for monitoring: the staging folder may not outlive this run
    return manifest


def scored_keys(out: Path) -> set[tuple[str, str]]:
    """(input hash, artifact hash) of every row already written: in scores.parquet or in a chunk part."""
    frames = [read_table(ScoreRow, path) for path in _outputs(out)]
    return {key for frame in frames for key in zip(frame["input_hash"], frame["artifact_hash"], strict=True)}


def pending_scans(scorer: Scorer, manifest: pd.DataFrame, out: Path) -> pd.DataFrame:
    done = scored_keys(out)
    return manifest[[(h, scorer.artifact.manifest_hash) not in done for h in manifest["source_hash"]]]


def save_part(out: Path, rows: list[dict[str, Any]]) -> Path | None:
    """One file per scored chunk, named by its content: parallel chunks never collide, an interruption loses one."""
    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=list(ScoreRow.model_fields))
    path = out / PARTS / f"part-{sha256_json(sorted(frame['input_hash']))[:16]}.parquet"
    write_table(ScoreRow, frame, path)
    return path


def merge_parts(out: Path) -> pd.DataFrame:
    """Fold the chunk parts into scores.parquet (one row per key, the first written wins), then remove them."""
    parts = sorted((out / PARTS).glob("part-*.parquet")) if (out / PARTS).exists() else []
    frames = [read_table(ScoreRow, path) for path in _outputs(out)]
    merged = (
        pd.concat(frames, ignore_index=True).drop_duplicates(["input_hash", "artifact_hash"], keep="first")
        if frames
        else pd.DataFrame(columns=list(ScoreRow.model_fields))
    )
    if parts:
        write_table(ScoreRow, merged.reset_index(drop=True), out / SCORES)
        for path in parts:
            path.unlink()
    return merged


def _outputs(out: Path) -> list[Path]:
    existing = [out / SCORES] if (out / SCORES).exists() else []
    found = existing + (sorted((out / PARTS).glob("part-*.parquet")) if (out / PARTS).exists() else [])
    for path in found:
        _check_version(path, out)
    return found


def _check_version(path: Path, out: Path) -> None:
    """A resumed run appends to what the folder holds: rows of another scores version cannot join them."""
    name, version = table_contract(path)
    if name == ScoreRow.contract_name and version == ScoreRow.contract_version:
        return
    found = f"scores version {version}" if name == ScoreRow.contract_name else f"contract {name!r} version {version}"
    raise DataContractError(
        ScoreRow.schema_filename(),
        [
            ContractProblem(
                "$.contract",
                f"the output folder already holds {found}; this medtl writes scores version "
                f"{ScoreRow.contract_version}, and rows of two versions cannot share one scores.parquet",
                found,
            )
        ],
        where=path.relative_to(out).as_posix(),
        fix=f"score into a new --out folder, or move {path.name} out of this one first"
        + (f" (data_contracts/scores.v{version}.schema.json describes it)" if name == ScoreRow.contract_name else "")
        + "; the scans in it are then scored again",
    )


def finish(
    scorer: Scorer,
    out: Path,
    manifest: pd.DataFrame,
    new: pd.DataFrame,
    *,
    sources: Sequence[Path],
    sr: bool,
    policy: str,
    tta: bool,
    already: int,
) -> ScoreResult:
    """Merge the parts, write the optional SRs, then one `scored` event in the artifact's audit log."""
    result = settle(scorer, out, manifest, new, sources=sources, sr=sr, already=already)
    record_scored(scorer, out, result, policy=policy, tta=tta)
    return result


def settle(
    scorer: Scorer, out: Path, manifest: pd.DataFrame, new: pd.DataFrame, *, sources: Sequence[Path], sr: bool,
    already: int,
) -> ScoreResult:  # fmt: skip
    """Fold the chunk parts into scores.parquet and write an SR for every row of these inputs."""
    scores = merge_parts(out)
    from medtl.scoring.sr_output import StructuredReports, write_structured_reports

    reports = StructuredReports()
    if sr:  # also rows scored by an interrupted run: the same inputs give the same SR UIDs
        mine = scores[
            (scores["artifact_hash"] == scorer.artifact.manifest_hash)
            & scores["scan_id"].isin(set(manifest["scan_id"]))
        ]
        reports = write_structured_reports(scorer, mine, out / STAGING, sources, out / "sr")
    return ScoreResult(
        out=out,
        scored=len(new),
        skipped_existing=already,
        abstained=int(new["abstained"].sum()) if len(new) else 0,
        flagged=int((new["flags"].apply(len) > 0).sum()) if len(new) else 0,
        approved=scorer.approved,
        reports=reports.written + reports.kept,  # every SR of these inputs: PACS sends them all back
        sr_omitted=reports.omitted,
        sr_failed=reports.failed,
        trusted=scorer.artifact.trusted,
    )


def record_scored(scorer: Scorer, out: Path, result: ScoreResult, *, policy: str, tta: bool, **extra: Any) -> None:
    scorer.artifact.append_event(
        "scored",
        actor="medtl score",
        payload=ScoredPayload.model_validate(
            {
                "scored": result.scored,
                "already_scored": result.skipped_existing,
                "abstained": result.abstained,
                "flagged": result.flagged,
                "scores_sha256": sha256_file(out / SCORES) if (out / SCORES).exists() else None,
                "approved": scorer.approved,
                "trusted": scorer.artifact.trusted,
                "policy": policy,
                "tta": tta,
                "sr_written": len(result.reports),
                "sr_omitted_attributes": omitted_counts(result.sr_omitted),
                "sr_failed": len(result.sr_failed),
                **extra,  # a caller's totals win (PACS scoring counts SRs over all its batches)
            }
        ).model_dump(mode="json"),
    )


def score(
    artifact: Path,
    sources: Sequence[Path],
    *,
    out: Path,
    pseudonymizer: Pseudonymizer,
    allow_unapproved: bool = False,
    policy: str = "flag",
    tta: bool = False,
    sr: bool = False,
    batch_size: int = 32,
    chunk_size: int = 256,
    workers: int = 0,
    progress: bool = False,
    trust: TrustSettings | None = None,
    registry: Path | None = None,
) -> ScoreResult:
    """prepare -> score_inputs (stage, score chunk by chunk, settle) -> one `scored` audit event."""
    check_policy(policy)
    scorer = prepare(artifact, allow_unapproved=allow_unapproved, trust=trust, registry=registry)
    result = score_inputs(
        scorer, sources, out=Path(out), pseudonymizer=pseudonymizer, policy=policy, tta=tta, sr=sr,
        batch_size=batch_size, chunk_size=chunk_size, workers=workers, progress=progress,
    )  # fmt: skip
    record_scored(scorer, Path(out), result, policy=policy, tta=tta)
    return result


def score_inputs(
    scorer: Scorer,
    sources: Sequence[Path],
    *,
    out: Path,
    pseudonymizer: Pseudonymizer,
    policy: str,
    tta: bool,
    sr: bool,
    batch_size: int,
    chunk_size: int,
    workers: int = 0,
    progress: bool = False,
) -> ScoreResult:
    """stage_inputs -> score_chunk per chunk (each saved as it finishes) -> settle; no audit event."""
    manifest = stage_inputs(scorer, sources, out, pseudonymizer=pseudonymizer, workers=workers, progress=progress)
    pending = pending_scans(scorer, manifest, out)
    rows: list[dict[str, Any]] = []
    with Progress(progress) as bar:
        for start in range(0, len(pending), chunk_size):
            chunk_rows = score_chunk(
                scorer, out / STAGING, pending.iloc[start : start + chunk_size], policy=policy, tta=tta,
                batch_size=batch_size,
            )  # fmt: skip
            save_part(out, chunk_rows)
            rows.extend(chunk_rows)
            bar.update("scoring", start + len(chunk_rows), len(pending))
    new = pd.DataFrame(rows, columns=list(ScoreRow.model_fields))
    return settle(scorer, out, manifest, new, sources=sources, sr=sr, already=len(manifest) - len(pending))


def check_policy(policy: str) -> None:
    if policy not in ("flag", "abstain"):
        raise ConfigError(f"unknown policy {policy!r}", fix="use flag (score and mark) or abstain (withhold decisions)")


def score_chunk(
    scorer: Scorer, staging: Path, chunk: pd.DataFrame, *, policy: str, tta: bool, batch_size: int
) -> list[dict[str, Any]]:
    """Score one chunk of manifest rows; rows the model cannot take are still returned (abstained, flagged)."""
    cache = ScanCache(staging)
    key = spec_hash(scorer.model.spec)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    records = chunk.to_dict(orient="records")
    flags = [
        input_flags(r, scorer.fingerprint, modalities=scorer.modalities, image_kind=scorer.image_kind) for r in records
    ]
    tensors: dict[int, str] = {}
    for i, record in enumerate(records):
        if "kind_mismatch" in flags[i]:
            continue
        relpath = checked_tensor(cache, record["pixel_hash"], record["cache_path"], list(record["affine"]),
                                 scorer.model.spec, key)  # fmt: skip
        if relpath is None:  # its cached array is damaged too: no input to score, the row says so
            flags[i].append(DAMAGED_INPUT)
        else:
            tensors[i] = relpath
    scorable = sorted(tensors)
    model = scorer.model
    if tta and not model.flip_axes:  # the left-right flip training augments with, for a model that does not average
        model = replace(model, flip_axes=resolve_flip_axes(AugmentConfig(), model.spec.spatial_dims))
    probabilities: dict[int, np.ndarray] = {}
    for start in range(0, len(scorable), batch_size):
        indices = scorable[start : start + batch_size]
        batch = torch.stack(
            [torch.from_numpy(np.load(staging / tensors[i], allow_pickle=False)) for i in indices]
        ).float()
        captured, handle = _capture_inputs(scorer.head)  # the first network's penultimate features
        try:
            with tapped(model.networks[0], scorer.knn.modules if scorer.knn else {}) as stages:
                predicted = model.predict(batch)
        finally:
            handle.remove()
        # The first forward pass is the first network on the unflipped input (mirror views come after it): the
        # feature references were fitted on unflipped training scans.
        first_pass = collected({name: parts[:1] for name, parts in stages.items()})
        outliers = feature_outliers(scorer, captured[0].flatten(1).float().cpu().numpy(), first_pass)
        for position, index in enumerate(indices):
            probabilities[index] = predicted[position]
            if outliers[position]:
                flags[index].append("feature_outlier")
    return [_row(scorer, records[i], probabilities.get(i), flags[i], policy, now) for i in range(len(records))]


def feature_outliers(scorer: Scorer, penultimate: np.ndarray, stages: dict[str, np.ndarray]) -> np.ndarray:
    """Which scans of a batch lie beyond the artifact's feature rule (the nearest-neighbour one when it has it)."""
    if scorer.knn is not None:
        return scorer.knn.scores(stages) > scorer.knn.threshold
    return scorer.reference.distances(penultimate) > scorer.reference.threshold


def _capture_inputs(module: torch.nn.Module) -> tuple[list[torch.Tensor], Any]:
    """Record what MODULE receives in this thread's forward passes. Other threads may run the same module at the
    same time (chunks scored in parallel); their calls are not ours to keep."""
    caller = threading.get_ident()
    captured: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if threading.get_ident() == caller:
            captured.append(inputs[0].detach())

    return captured, module.register_forward_pre_hook(keep)


def _row(
    scorer: Scorer, record: dict[str, Any], probabilities: np.ndarray | None, flags: list[str], policy: str, now: str
) -> dict[str, Any]:
    abstained = probabilities is None or (policy == "abstain" and any(f in OOD_FLAGS for f in flags))
    return {
        "scan_id": record["scan_id"],
        "series_id": record["series_id"],
        "study_id": record["study_id"],
        "patient_id": record["patient_id"],
        "input_hash": record["source_hash"],
        "model_id": scorer.artifact.metadata["model_id"],
        "model_version": scorer.artifact.metadata["model_version"],
        "artifact_hash": scorer.artifact.manifest_hash,
        **scorer.policy.columns(probabilities, abstained=abstained),
        "flags": sorted(set(flags)),
        "abstained": bool(abstained),
        "approved": scorer.approved,
        "trusted": scorer.artifact.trusted,
        "scored_at": now,
    }
