"""`medtl evaluate`: the artifact's out-of-fold predictions (and a locked test set, scored once) -> metrics.json,
report.html / report.pdf, and an `evaluated` event in the artifact's audit log.

Order matters: the operating point is chosen on the out-of-fold predictions by a declared rule, and only then is
the test set predicted and measured at that frozen threshold. Every scoring of a test set is recorded in the audit
log with the test data's manifest hash, so repeated peeking at a test set is visible to an auditor.

A report is never overwritten: a clinician's approval is bound to the SHA-256 of the report they read, so the
report folder must be new (or empty), and it appears whole or not at all (written beside it, then renamed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from medtl import __version__
from medtl.artifacts import (
    SIGNING_KEY_ENV,
    TRUSTED_KEYS_ENV,
    VerifiedArtifact,
    key_fingerprint,
    open_verified,
    public_key_hex,
    resolve_signing_key,
)
from medtl.artifacts.contents import ArtifactContents
from medtl.artifacts.trust import TrustSettings
from medtl.cards.files import report_card_files, write_card_files
from medtl.contracts import write_json
from medtl.contracts.evaluation import Estimate, Evaluation, Metrics, OperatingPoint, TransferArm
from medtl.contracts.handoff import ArmTransfer, EvaluatedPayload
from medtl.contracts.task import Endpoint, TaskKind, decision_endpoint, endpoints
from medtl.errors import ConfigError
from medtl.evaluation.calibration import calibration, fit_temperature
from medtl.evaluation.clinical_utility import decision_curves, probability_histograms
from medtl.evaluation.endpoints import choose_points, endpoint_scores, task_arrays
from medtl.evaluation.failures import failure_candidates
from medtl.evaluation.failures import failure_cases as find_failure_cases
from medtl.evaluation.headline import headline
from medtl.evaluation.label_efficiency import label_efficiency, pooled_auroc
from medtl.evaluation.metrics import auprc_ci, auroc_ci, roc_points, threshold_metrics
from medtl.evaluation.operating_point import choose_threshold, choose_threshold_by_fold
from medtl.evaluation.recipe import recipe_section
from medtl.evaluation.replicates import check_replicates, seed_spread
from medtl.evaluation.subgroups import subgroup_results
from medtl.evaluation.task_evaluation import task_evaluation
from medtl.evaluation.unseen import check_unseen
from medtl.models.loaded import LoadedModel, load_model
from medtl.outputs import staged_folder
from medtl.reporting.model import (
    Cohort,
    Curve,
    EvaluationCurves,
    FailureCase,
    ProbabilityHistogram,
    Provenance,
    ReportInput,
    TransferCurve,
)
from medtl.training.config import TaskConfig
from medtl.training.cv import POOLING_GAP
from medtl.training.data import TensorSet, load_task

UNTRUSTED_LIMITATION = (
    "UNTRUSTED: this report was made without a trust anchor (development mode); nothing shows who built the model."
)
DEFAULT_LIMITATIONS = (
    "Performance was estimated by patient-grouped cross-validation on the development data"
    " (and on a locked test set only where this report says so); other scanners, sites and populations may differ.",
    "The operating point was chosen on out-of-fold predictions; its sensitivity and specificity on new data are"
    " estimates with the uncertainty shown.",
    "Saliency maps are illustrative and not validated localisation.",
    "Not for clinical use until approved; decisions stay with the clinician.",
)


@dataclass
class EvaluationResult:
    out: Path
    metrics: Metrics
    files: dict[str, str]

    def describe(self) -> str:
        lines = [f"wrote {', '.join(sorted(self.files))} to {self.out}"]
        for evaluation in self.metrics.evaluations:
            line = headline(evaluation)
            if line is not None:
                lines.append(f"  {line}")
        return "\n".join(lines)


def evaluate(
    artifact: Path,
    *,
    out: Path,
    test: Path | None = None,
    dataset: Path | None = None,
    rule: str = "youden",
    temperature_scaling: bool = False,
    failure_cases: int = 2,
    pdf: bool = True,
    n_boot: int = 2000,
    trust: TrustSettings | None = None,
    replicates: Sequence[Path] = (),
) -> EvaluationResult:
    """`dataset` (the training dataset) lets the report show out-of-fold failure cases when no test set is given.
    `replicates`: artifacts of the same recipe trained with other seeds, for the seed-to-seed spread
    (evaluation/replicates.py); each is verified like the artifact, and refused unless only its seed differs.

    The `evaluated` event is signed with the pipeline's key ($MEDTL_SIGNING_KEY): a reviewer can approve only a
    report whose evaluation a pipeline key signed. Both are checked before any work starts.
    """
    check_new_report(Path(out))  # before the work: a refusal after minutes of bootstrap would waste them
    verified = open_verified(artifact, trust=trust)
    key = evaluation_key(verified)
    metadata = verified.metadata
    task = metadata["task"]
    kind: TaskKind = task["kind"]
    binary = kind == "binary"
    if temperature_scaling and not binary:
        raise ConfigError(
            f"temperature scaling is fitted for binary tasks only, and this artifact's task is {kind}",
            fix="evaluate without --temperature-scaling: the calibration of every class, cut or finding is still "
            "reported",
        )
    classes, positive = list(task["classes"]), task["positive_class"]
    contents = ArtifactContents(verified)
    others = [ArtifactContents(open_verified(path, trust=trust)) for path in replicates]
    check_replicates(contents, others)  # before the work, like every other refusal
    oof = contents.oof
    transfer = contents.transfer.arms  # per arm: folds, curves, the pooling gap
    main = oof[oof["arm"] == "main"].reset_index(drop=True)
    by_fold = rule.replace(" ", "").lower() == "youden" and _pooling_gap_flagged(transfer)
    point, temperature = None, None
    points: dict[str, OperatingPoint] = {}
    decision = decision_endpoint(kind, classes, positive, task.get("decision_cut"))
    if binary:
        main["y"] = (main["label"].astype(str) == str(positive)).astype(int)
        if by_fold:
            point = choose_threshold_by_fold(main["y"], main["probability"], main["fold"], rule)
        else:
            point = choose_threshold(main["y"].to_numpy(), main["probability"].to_numpy(), rule)
        if temperature_scaling:
            temperature = fit_temperature(main["y"].to_numpy(), main["probability"].to_numpy())
        points = {endpoints(kind, classes, positive)[0].id: point}
    else:
        points = choose_points(main, kind, classes, rule, by_fold=by_fold)  # frozen before the test set is read
        point = points[decision.id] if decision is not None else None

    def measure(name: str, frame: pd.DataFrame) -> Evaluation:
        if binary:
            result = _evaluation(name, frame, point, temperature, n_boot)
        else:
            chosen = decision.id if decision is not None else None
            result = task_evaluation(name, frame, kind, classes, points=points, decision=chosen, n_boot=n_boot)
        utility = decision_curves(frame, kind, classes, positive=positive, decision=decision, points=points)
        return result.model_copy(update={"decision_curves": utility})

    evaluations = [measure("oof", main)]

    def curves_of(name: str, frame: pd.DataFrame) -> list[EvaluationCurves]:
        return [_curves(name, frame)] if binary else _endpoint_curves(name, frame, kind, classes, decision)

    def distributions_of(name: str, frame: pd.DataFrame) -> list[ProbabilityHistogram]:
        return probability_histograms(name, frame, kind, classes, positive=positive, decision=decision)

    curves, distributions = curves_of("oof", main), distributions_of("oof", main)
    model = load_model(verified)  # once: it predicts the test set and explains the failure cases
    task_config = _pinned_task(TaskConfig.model_validate(verified.read_yaml("config.yaml")["task"]), kind, classes)
    test_frame, test_tensors, test_hash = None, None, None
    if test is not None:
        check_unseen({"model": contents}, Path(test))
        test_frame, test_tensors, test_hash = _score_test(model, task_config, test)
        evaluations.append(measure("test", test_frame))
        curves += curves_of("test", test_frame)
        distributions += distributions_of("test", test_frame)
    metrics = Metrics(
        artifact_manifest_hash=verified.manifest_hash,
        model_id=metadata["model_id"],
        model_version=metadata["model_version"],
        evaluations=evaluations,
        transfer=_transfer(transfer, oof, kind, classes, positive, n_boot),
        label_efficiency=label_efficiency(contents.label_efficiency, transfer, kind, classes, positive, n_boot=n_boot),
        seed_spread=seed_spread(contents, others, n_boot=n_boot) if others else None,
    )
    select = partial(
        failure_candidates, kind=kind, classes=classes, count=failure_cases,
        threshold=point.threshold if binary and point is not None else None, points=points, decision=decision,
    )  # fmt: skip
    cases = find_failure_cases(
        model, task_config, select, test_frame=test_frame, test_tensors=test_tensors, oof=main, dataset=dataset
    )
    report = _report_input(contents, metrics, curves, cases, test_frame).model_copy(
        update={"distributions": distributions}
    )
    out = Path(out)
    files = _write_new_report(
        metrics, report, out, pdf=pdf, card=partial(report_card_files, contents, metrics, recorded=key is not None)
    )
    verified.append_event(
        "evaluated",
        actor="medtl evaluate",
        payload=EvaluatedPayload(
            files=files,
            operating_point=point,
            operating_points=points,
            temperature=temperature,
            test_manifest_hash=test_hash,
            evaluated_on=[e.evaluated_on for e in evaluations],
        ).model_dump(mode="json"),
        signing_key=key,
    )
    return EvaluationResult(out, metrics, files)


def evaluation_key(verified: VerifiedArtifact) -> Ed25519PrivateKey | None:
    """The pipeline key that will sign the `evaluated` event; refuses one whose signature would not count."""
    key = resolve_signing_key()
    if key is None:
        if verified.trust.allow_unsigned:
            return None  # development: the evaluation is recorded unsigned and can never be approved
        raise ConfigError(
            "no pipeline signing key: the evaluation must be signed, or no reviewer can approve its report",
            fix=f"set {SIGNING_KEY_ENV} to the pipeline's Ed25519 key (the one whose public key is in "
            f"{TRUSTED_KEYS_ENV})",
        )
    public = public_key_hex(key)
    if public not in verified.report.pipeline_keys:
        raise ConfigError(
            f"the signing key {key_fingerprint(public)} is not a pipeline key for this artifact, so its evaluation "
            "would not count",
            fix=f"use the key whose public key is in {TRUSTED_KEYS_ENV} (in development: the key that sealed the "
            "artifact)",
        )
    return key


def check_new_report(out: Path) -> None:
    """Refuse a report folder that already holds anything: an earlier report there may be the one a clinician
    approved (the approval names its SHA-256), and anything else there is not ours to mix with."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            "the report folder already exists and is not empty: a report is never overwritten (an approval is bound "
            "to the SHA-256 of the report it was given for)",
            where=str(out),
            fix="pass a new folder to --out (for example the same name with -2 appended); keep or archive the "
            "earlier report as it is",
        )


def _write_new_report(
    metrics: Metrics,
    report: ReportInput,
    out: Path,
    *,
    pdf: bool,
    card: Callable[[str], dict[str, bytes]] | None = None,
) -> dict[str, str]:
    """Write metrics.json, the report and (given `card`, called with metrics.json's sha256) the model card files
    beside OUT, then rename the folder to OUT: never half a report, and never over one that appeared meanwhile.
    Returns {file name: sha256}."""
    from medtl.hashing import sha256_file
    from medtl.reporting.render import write_report

    with staged_folder(out, what="the report folder") as staged:
        write_json(metrics, staged / "metrics.json")
        digest = sha256_file(staged / "metrics.json")
        files = {"metrics.json": digest, **write_report(report, staged, pdf=pdf)}
        if card is not None:
            files.update(write_card_files(card(digest), staged))
    return files


def _evaluation(
    name: str, frame: pd.DataFrame, point: OperatingPoint, temperature: float | None, n_boot: int
) -> Evaluation:
    targets, scores, patients = frame["y"].to_numpy(), frame["probability"].to_numpy(), frame["patient_id"].to_numpy()
    estimates: list[Estimate] = [
        auroc_ci(targets, scores, patients, n_boot=n_boot).estimate("auroc", n=int(frame["patient_id"].nunique())),
        auprc_ci(targets, scores, patients, n_boot=n_boot).estimate("auprc", n=int(targets.sum())),
        *threshold_metrics(targets, scores, point.threshold, patients, n_boot=n_boot),
    ]
    predicted = (scores >= point.threshold).astype(int)
    confusion = [[int(((targets == t) & (predicted == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    return Evaluation(
        evaluated_on=name,  # type: ignore[arg-type]
        task_kind="binary",
        n_patients=int(frame["patient_id"].nunique()),
        n_scans=len(frame),
        prevalence=float(targets.mean()) if len(targets) else None,
        operating_point=point,
        estimates=estimates,
        classes=["negative", "positive"],
        confusion=confusion,
        calibration=calibration(targets, scores, temperature=temperature),
        subgroups=subgroup_results(frame, score="probability", target="y", threshold=point.threshold),
    )


def _curves(name: str, frame: pd.DataFrame) -> EvaluationCurves:
    return _curve(name, frame["y"].to_numpy(), frame["probability"].to_numpy(), None)


def _endpoint_curves(
    name: str, frame: pd.DataFrame, kind: TaskKind, classes: list[str], decision: Endpoint | None
) -> list[EvaluationCurves]:
    """ROC and PR curves of the decisions a reviewer weighs: the ordinal decision cut, or every finding (one class
    of a multiclass task is not a decision on its own: none)."""
    chosen = [decision] if kind == "ordinal" and decision is not None else []
    if kind == "multilabel":
        chosen = endpoints(kind, classes)
    probabilities, truth = task_arrays(frame, kind, classes)
    curves = []
    for endpoint in chosen:
        targets, scores = endpoint_scores(endpoint, probabilities, truth)
        if len(np.unique(targets)) == 2:  # a curve needs both outcomes among the patients
            curves.append(_curve(name, targets, scores, endpoint.id))
    return curves


def _curve(name: str, targets: np.ndarray, scores: np.ndarray, endpoint: str | None) -> EvaluationCurves:
    from sklearn.metrics import precision_recall_curve

    fpr, tpr = roc_points(targets, scores)
    precision, recall, _ = precision_recall_curve(targets, scores)
    return EvaluationCurves(
        evaluated_on=name,  # type: ignore[arg-type]
        endpoint=endpoint,
        roc=Curve(x=fpr, y=tpr),
        pr=Curve(x=[float(v) for v in recall], y=[float(v) for v in precision]),
    )


def _score_test(model: LoadedModel, task_config: TaskConfig, dataset: Path) -> tuple[pd.DataFrame, torch.Tensor, str]:
    """Predict the locked test scans once with the sealed model (split 'test' when the dataset has splits; the caller
    has checked them with unseen.check_unseen); the frame has the columns of training's prediction frames (p_<class>,
    target; y_<finding> for multi-label; for a binary task probability and y)."""
    task = load_task(dataset, task_config, model.spec)
    scans = task.scans
    rows = (
        np.flatnonzero((scans["split"] == "test").to_numpy())
        if (scans["split"] == "test").any()
        else np.arange(len(scans))
    )
    data = TensorSet(task, rows)
    tensors = torch.stack([data[i][0] for i in range(len(data))]) if len(data) else torch.empty(0)
    probabilities = np.concatenate([model.predict(tensors[i : i + 64]) for i in range(0, len(tensors), 64)])
    frame = scans.iloc[rows][["scan_id", "patient_id", "label"]].reset_index(drop=True)
    for column in ("site", "manufacturer", "sex", "age_band", "modality"):
        if column in scans:
            frame[column] = scans[column].iloc[rows].to_numpy()
    frame["target"] = scans["target"].iloc[rows].to_numpy()
    for index, name in enumerate(model.classes):
        frame[f"p_{name}"] = probabilities[:, index]
    if task.findings is not None:
        for index, name in enumerate(task.classes):
            frame[f"y_{name}"] = task.findings[rows, index].astype(int)
    if model.task_kind == "binary":
        positive = task.classes.index(model.positive_class) if model.positive_class in task.classes else 1
        frame["probability"] = probabilities[:, positive]
        frame["y"] = (frame["label"].astype(str) == str(model.positive_class)).astype(int)
    return frame, tensors, task.manifest_hash


def _pinned_task(task_config: TaskConfig, kind: TaskKind, classes: list[str]) -> TaskConfig:
    """A test set is read with the model's own task type and class order: a test set that lacks a grade or a finding
    must not shift the indices of the others (a binary task keeps its config, as it always has)."""
    if kind == "binary":
        return task_config
    return task_config.model_copy(update={"kind": kind, "classes": list(classes)})


def _transfer(
    entries: list[ArmTransfer],
    oof: pd.DataFrame,
    kind: TaskKind,
    classes: list[str],
    positive: str | None,
    n_boot: int,
) -> list[TransferArm]:
    """Each arm's pooled out-of-fold AUROC: the positive class's (binary) or the task's summary AUROC (macro over
    classes; for multi-label the mean over findings)."""
    arms = []
    for entry in entries:
        auc = pooled_auroc(oof[oof["arm"] == entry.arm], kind, classes, positive, n_boot=n_boot)
        pretrained = entry.pretrained
        seconds = [f.seconds_to_scratch_best for f in entry.folds if f.seconds_to_scratch_best]
        arms.append(
            TransferArm(
                arm=entry.arm,
                strategy=entry.strategy,
                pretrained=f"{pretrained.get('source', 'none')}:{pretrained.get('name', 'none')}",
                auc=auc,
                epochs_to_scratch_best=entry.median_epochs_to_scratch_best,
                seconds_to_scratch_best=float(np.median(seconds)) if seconds else None,
                folds_reaching_scratch_best=entry.folds_reaching_scratch_best,
                fold_aucs=[f.heldout_auc for f in entry.folds],
                pooling_gap=entry.pooling_gap,
                seconds_per_fold=entry.seconds_per_fold,
                feature_seconds=next((f.features.feature_seconds for f in entry.folds if f.features), None),
            )
        )
    return arms


def _report_input(
    contents: ArtifactContents,
    metrics: Metrics,
    curves: list[EvaluationCurves],
    cases: list[FailureCase],
    test_frame: pd.DataFrame | None,
) -> ReportInput:
    verified = contents.verified
    metadata = verified.metadata
    provenance = metadata["provenance"]
    pretrained = provenance["pretrained"]
    oof = metrics.evaluations[0]
    config = verified.read_yaml("config.yaml")
    return ReportInput(
        title=f"Evaluation report: {metadata['model_id']} {metadata['model_version']}",
        model_id=metadata["model_id"],
        model_version=metadata["model_version"],
        intended_use=metadata["intended_use"],
        task_kind=metadata["task"]["kind"],
        positive_class=metadata["task"]["positive_class"],
        decision_cut_declared=metadata["task"].get("decision_cut_declared"),
        cohort=Cohort(
            n_patients=oof.n_patients,
            n_scans=oof.n_scans,
            prevalence=oof.prevalence,
            classes=metadata["task"]["classes"],
            modalities=metadata["input"]["modalities"],
            image_kind=metadata["input"]["image_kind"],
            excluded_scans={},
            locked_test_patients=len(contents.splits.locked_test),
        ),
        metrics=metrics,
        curves=curves,
        recipe=recipe_section(verified, config),
        transfer_curves=[
            TransferCurve(
                arm=entry.arm,
                fold=fold.fold,
                epochs=[r.epoch for r in fold.curve],
                tune_auc=[r.tune_auc for r in fold.curve],
                seconds=[r.seconds for r in fold.curve],
            )
            for entry in contents.transfer.arms
            for fold in entry.folds
            if fold.curve  # the features arm has no epochs to draw
        ],
        failure_cases=cases,
        limitations=([] if verified.trusted else [UNTRUSTED_LIMITATION])
        + _pooling_limitations(metrics)
        + list(DEFAULT_LIMITATIONS),
        provenance=Provenance(
            artifact_manifest_hash=verified.manifest_hash,
            signed_by=verified.manifest.key_fingerprint if verified.is_signed else None,
            signer_trusted=verified.trusted,
            data_manifest_hash=provenance["manifest_hash"],
            code_version=provenance["code_version"],
            pretrained=_describe_pretrained(pretrained),
            pretrained_license=pretrained.get("license"),
            seed=int(config.get("seed", provenance["seed"])),
            trained_at=provenance["finished_at"],
        ),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        medtl_version=__version__,
    )


def _pooling_gap_flagged(transfer: list[ArmTransfer]) -> bool:
    return any(entry.arm == "main" and entry.pooling_gap_flagged for entry in transfer)


def _pooling_limitations(metrics: Metrics) -> list[str]:
    """Say it on page one when the pooled out-of-fold AUROC understates what each fold achieved on its own."""
    main = next((arm for arm in metrics.transfer if arm.arm == "main"), None)
    if main is None or main.pooling_gap is None or main.pooling_gap <= POOLING_GAP:
        return []
    folds = ", ".join("n/a" if value is None else f"{value:.3f}" for value in main.fold_aucs)
    point = metrics.evaluations[0].operating_point
    threshold = (
        "The operating point is the median of the thresholds the rule picks on each fold's own held-out patients."
        if point is not None and point.pooling == "fold_median"
        else "The operating point was chosen on the pooled predictions, as its declared rule requires."
    )
    return [
        f"The folds' own AUROCs ({folds}) are higher than the pooled out-of-fold AUROC ({main.auc.value:.3f}) by "
        f"{main.pooling_gap:.3f} (median): the fold models score on different scales, so the pooled figures and the "
        f"calibration measured on them understate the model; read them as a lower bound. {threshold}"
    ]


def _describe_pretrained(pretrained: dict[str, Any]) -> str:
    if pretrained.get("source") == "none":
        return "none (trained from random initialisation)"
    digest = pretrained.get("sha256") or ""
    return f"{pretrained.get('source')}: {pretrained.get('name')} (sha256 {digest[:16]}...)"
