"""`medtl evaluate`: the artifact's out-of-fold predictions (and a locked test set, scored once) -> metrics.json,
report.html / report.pdf, and an `evaluated` event in the artifact's audit log.

Order matters: the operating point is chosen on the out-of-fold predictions by a declared rule, and only then is
the test set predicted and measured at that frozen threshold. Every scoring of a test set is recorded in the audit
log with the test data's manifest hash, so repeated peeking at a test set is visible to an auditor.

A report is never overwritten: a clinician's approval is bound to the SHA-256 of the report they read, so the
report folder must be new (or empty), and it appears whole or not at all (written beside it, then renamed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
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
from medtl.contracts import write_json
from medtl.contracts.evaluation import Estimate, Evaluation, Metrics, OperatingPoint, TransferArm
from medtl.errors import ConfigError, LeakageError
from medtl.evaluation.calibration import calibration, fit_temperature
from medtl.evaluation.metrics import auprc_ci, auroc_ci, bootstrap, macro_auroc_ci, roc_points, threshold_metrics
from medtl.evaluation.operating_point import choose_threshold, choose_threshold_by_fold
from medtl.evaluation.recipe import recipe_section
from medtl.evaluation.saliency import saliency_map, thumbnail_png
from medtl.evaluation.subgroups import subgroup_results
from medtl.outputs import staged_folder
from medtl.reporting.model import Cohort, Curve, EvaluationCurves, FailureCase, Provenance, ReportInput, TransferCurve
from medtl.scoring.model import LoadedModel, load_model
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
            named = {e.name: e for e in evaluation.estimates}
            auroc = named.get("auroc")
            if auroc and auroc.value is not None:
                lines.append(
                    f"  {evaluation.evaluated_on:<4} AUROC {auroc.value:.3f} ({auroc.ci_low:.3f}-{auroc.ci_high:.3f})"
                    f" on {evaluation.n_patients} patients"
                )
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
) -> EvaluationResult:
    """`dataset` (the training dataset) lets the report show out-of-fold failure cases when no test set is given.

    The `evaluated` event is signed with the pipeline's key ($MEDTL_SIGNING_KEY): a reviewer can approve only a
    report whose evaluation a pipeline key signed. Both are checked before any work starts.
    """
    check_new_report(Path(out))  # before the work: a refusal after minutes of bootstrap would waste them
    verified = open_verified(artifact, trust=trust)
    key = evaluation_key(verified)
    metadata = verified.metadata
    task = metadata["task"]
    binary = task["kind"] == "binary"
    oof = verified.read_table("predictions/oof.parquet")
    transfer = [arm.model_dump() for arm in ArtifactContents(verified).transfer.arms]  # folds, curves, pooling gap
    main = oof[oof["arm"] == "main"].reset_index(drop=True)
    positive = task["positive_class"]
    point, temperature = None, None
    if binary:
        main["y"] = (main["label"].astype(str) == str(positive)).astype(int)
        if rule.replace(" ", "").lower() == "youden" and _pooling_gap_flagged(transfer):
            point = choose_threshold_by_fold(main["y"], main["probability"], main["fold"], rule)
        else:
            point = choose_threshold(main["y"].to_numpy(), main["probability"].to_numpy(), rule)
        if temperature_scaling:
            temperature = fit_temperature(main["y"].to_numpy(), main["probability"].to_numpy())

    def measure(name: str, frame: pd.DataFrame) -> Evaluation:
        if binary:
            return _evaluation(name, frame, point, temperature, n_boot)
        return _multiclass_evaluation(name, frame, task["classes"], n_boot)

    evaluations = [measure("oof", main)]
    curves = [_curves("oof", main)] if binary else []
    model = load_model(verified)  # once: it predicts the test set and explains the failure cases
    task_config = TaskConfig.model_validate(verified.read_yaml("config.yaml")["task"])
    test_frame, test_tensors, test_hash = None, None, None
    if test is not None:
        test_frame, test_tensors, test_hash = _score_test(model, task_config, test, oof)
        evaluations.append(measure("test", test_frame))
        if binary:
            curves.append(_curves("test", test_frame))
    metrics = Metrics(
        artifact_manifest_hash=verified.manifest_hash,
        model_id=metadata["model_id"],
        model_version=metadata["model_version"],
        evaluations=evaluations,
        transfer=_transfer(transfer, oof, task["classes"], positive, n_boot),
    )
    cases = (
        _failure_cases(model, task_config, test_frame, test_tensors, main, dataset, point.threshold, failure_cases)
        if point is not None
        else []
    )
    report = _report_input(verified, transfer, metrics, curves, cases, test_frame)
    out = Path(out)
    files = _write_new_report(metrics, report, out, pdf=pdf)
    verified.append_event(
        "evaluated",
        actor="medtl evaluate",
        payload={
            "files": files,
            "operating_point": point.model_dump() if point is not None else None,
            "temperature": temperature,
            "test_manifest_hash": test_hash,
            "evaluated_on": [e.evaluated_on for e in evaluations],
        },
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


def _write_new_report(metrics: Metrics, report: ReportInput, out: Path, *, pdf: bool) -> dict[str, str]:
    """Write metrics.json and the report beside OUT, then rename the folder to OUT: never half a report, and never
    over one that appeared meanwhile. Returns {file name: sha256}."""
    from medtl.hashing import sha256_file
    from medtl.reporting.render import write_report

    with staged_folder(out, what="the report folder") as staged:
        write_json(metrics, staged / "metrics.json")
        files = {"metrics.json": sha256_file(staged / "metrics.json"), **write_report(report, staged, pdf=pdf)}
    return files


def _evaluation(
    name: str, frame: pd.DataFrame, point: OperatingPoint, temperature: float | None, n_boot: int
) -> Evaluation:
    targets, scores, patients = frame["y"].to_numpy(), frame["probability"].to_numpy(), frame["patient_id"].to_numpy()
    estimates: list[Estimate] = [
        auroc_ci(targets, scores, patients, n_boot=n_boot).estimate("auroc", n=int(frame["patient_id"].nunique())),
        auprc_ci(targets, scores, patients, n_boot=n_boot).estimate("auprc", n=int(targets.sum())),
        *threshold_metrics(targets, scores, point.threshold, patients),
    ]
    predicted = (scores >= point.threshold).astype(int)
    confusion = [[int(((targets == t) & (predicted == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    return Evaluation(
        evaluated_on=name,  # type: ignore[arg-type]
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


def _multiclass_evaluation(name: str, frame: pd.DataFrame, classes: list[str], n_boot: int) -> Evaluation:
    """One-vs-rest AUROC per class and their macro mean (patient bootstrap), accuracy, and the confusion matrix."""
    targets = frame["target"].to_numpy().astype(int)
    probabilities = frame[[f"p_{c}" for c in classes]].to_numpy()
    patients = frame["patient_id"].to_numpy()
    estimates = [macro_auroc_ci(frame, classes, n_boot=n_boot).estimate("auroc", n=int(frame["patient_id"].nunique()))]
    for index, name_ in enumerate(classes):
        interval = auroc_ci(targets == index, probabilities[:, index], patients, n_boot=n_boot)
        estimates.append(interval.estimate(f"auroc_{name_}", n=int((targets == index).sum())))
    predicted = probabilities.argmax(axis=1)
    accuracy = bootstrap(lambda rows: float((predicted[rows] == targets[rows]).mean()), len(targets), patients)
    estimates.append(accuracy.estimate("accuracy", n=len(targets)))
    confusion = [
        [int(((targets == t) & (predicted == p)).sum()) for p in range(len(classes))] for t in range(len(classes))
    ]
    return Evaluation(
        evaluated_on=name,  # type: ignore[arg-type]
        n_patients=int(frame["patient_id"].nunique()),
        n_scans=len(frame),
        prevalence=None,
        operating_point=None,
        estimates=estimates,
        classes=list(classes),
        confusion=confusion,
    )


def _curves(name: str, frame: pd.DataFrame) -> EvaluationCurves:
    from sklearn.metrics import precision_recall_curve

    fpr, tpr = roc_points(frame["y"].to_numpy(), frame["probability"].to_numpy())
    precision, recall, _ = precision_recall_curve(frame["y"].to_numpy(), frame["probability"].to_numpy())
    return EvaluationCurves(
        evaluated_on=name,  # type: ignore[arg-type]
        roc=Curve(x=fpr, y=tpr),
        pr=Curve(x=[float(v) for v in recall], y=[float(v) for v in precision]),
    )


def _score_test(
    model: LoadedModel, task_config: TaskConfig, dataset: Path, oof: pd.DataFrame
) -> tuple[pd.DataFrame, torch.Tensor, str]:
    """Predict the locked test scans once with the sealed model (split 'test' when the dataset has splits)."""
    task = load_task(dataset, task_config, model.spec)
    scans = task.scans
    rows = (
        np.flatnonzero((scans["split"] == "test").to_numpy())
        if (scans["split"] == "test").any()
        else np.arange(len(scans))
    )
    overlap = set(scans["patient_id"].iloc[rows]) & set(oof["patient_id"])
    if overlap:
        raise LeakageError(
            f"{len(overlap)} test patient(s) were part of the model's training cross-validation",
            where=f"patients {sorted(overlap)[:5]}",
            fix="a test set must hold patients the model never saw; use the locked test split or another site",
        )
    data = TensorSet(task, rows)
    tensors = torch.stack([data[i][0] for i in range(len(data))]) if len(data) else torch.empty(0)
    probabilities = np.concatenate([model.predict(tensors[i : i + 64]) for i in range(0, len(tensors), 64)])
    positive = task.classes.index(model.positive_class) if model.positive_class in task.classes else 1
    frame = scans.iloc[rows][["scan_id", "patient_id", "label"]].reset_index(drop=True)
    for column in ("site", "manufacturer", "sex", "age_band", "modality"):
        if column in scans:
            frame[column] = scans[column].iloc[rows].to_numpy()
    frame["target"] = scans["target"].iloc[rows].to_numpy()
    for index, name in enumerate(model.classes):
        frame[f"p_{name}"] = probabilities[:, index]
    frame["probability"] = probabilities[:, positive]
    frame["y"] = (frame["label"].astype(str) == str(model.positive_class)).astype(int)
    return frame, tensors, task.manifest_hash


def _transfer(
    entries: list[dict[str, Any]], oof: pd.DataFrame, classes: list[str], positive: str | None, n_boot: int
) -> list[TransferArm]:
    arms = []
    for entry in entries:
        frame = oof[oof["arm"] == entry["arm"]]
        if positive is not None:
            targets = (frame["label"].astype(str) == str(positive)).astype(int).to_numpy()
            scores = frame["probability"].to_numpy()
            interval = auroc_ci(targets, scores, frame["patient_id"].to_numpy(), n_boot=n_boot)
        else:
            interval = macro_auroc_ci(frame, classes, n_boot=n_boot)
        pretrained = entry.get("pretrained") or {}
        seconds = [f["seconds_to_scratch_best"] for f in entry["folds"] if f.get("seconds_to_scratch_best")]
        arms.append(
            TransferArm(
                arm=entry["arm"],
                strategy=entry["strategy"],
                pretrained=f"{pretrained.get('source', 'none')}:{pretrained.get('name', 'none')}",
                auc=interval.estimate("auroc", n=int(frame["patient_id"].nunique())),
                epochs_to_scratch_best=entry.get("median_epochs_to_scratch_best"),
                seconds_to_scratch_best=float(np.median(seconds)) if seconds else None,
                folds_reaching_scratch_best=int(entry.get("folds_reaching_scratch_best", 0)),
                fold_aucs=[f.get("heldout_auc") for f in entry["folds"]],
                pooling_gap=entry.get("pooling_gap"),
            )
        )
    return arms


def _failure_cases(
    model: LoadedModel,
    task_config: TaskConfig,
    test_frame: pd.DataFrame | None,
    test_tensors: torch.Tensor | None,
    oof: pd.DataFrame,
    dataset: Path | None,
    threshold: float,
    count: int,
) -> list[FailureCase]:
    """The most confident errors: highest-scored negatives and lowest-scored positives, with saliency."""
    if count <= 0:
        return []
    if test_frame is not None and test_tensors is not None:
        frame, tensors = test_frame, test_tensors
    elif dataset is not None:
        frame, tensors = oof, _oof_tensors(model, task_config, oof, dataset)
    else:
        return []
    positive = 1
    cases = []
    wrong_negative = frame[(frame["y"] == 0) & (frame["probability"] >= threshold)].nlargest(count, "probability")
    wrong_positive = frame[(frame["y"] == 1) & (frame["probability"] < threshold)].nsmallest(count, "probability")
    for kind, chosen in (("false_positive", wrong_negative), ("false_negative", wrong_positive)):
        for index, row in chosen.iterrows():
            tensor = tensors[frame.index.get_loc(index)]
            heat, method = saliency_map(model.networks, model.artifact.metadata["model"], tensor, positive)
            cases.append(
                FailureCase(
                    kind=kind,  # type: ignore[arg-type]
                    scan_id=row["scan_id"],
                    probability=float(row["probability"]),
                    true_class=str(row["label"]),
                    thumbnail_png=thumbnail_png(tensor[0].numpy(), heat),
                    saliency_method=method,
                )
            )
    return cases


def _oof_tensors(model: LoadedModel, task_config: TaskConfig, oof: pd.DataFrame, dataset: Path) -> torch.Tensor:
    task = load_task(dataset, task_config, model.spec)
    position = {scan: i for i, scan in enumerate(task.scans["scan_id"])}
    rows = np.array([position[scan] for scan in oof["scan_id"]])
    data = TensorSet(task, rows)
    return torch.stack([data[i][0] for i in range(len(data))])


def _report_input(
    verified: VerifiedArtifact,
    transfer: list[dict[str, Any]],
    metrics: Metrics,
    curves: list[EvaluationCurves],
    cases: list[FailureCase],
    test_frame: pd.DataFrame | None,
) -> ReportInput:
    metadata = verified.metadata
    provenance = metadata["provenance"]
    pretrained = provenance["pretrained"]
    oof = metrics.evaluations[0]
    config = verified.read_yaml("config.yaml")
    splits = verified.read_json("splits.json")
    return ReportInput(
        title=f"Evaluation report: {metadata['model_id']} {metadata['model_version']}",
        model_id=metadata["model_id"],
        model_version=metadata["model_version"],
        intended_use=metadata["intended_use"],
        task_kind=metadata["task"]["kind"],
        positive_class=metadata["task"]["positive_class"],
        cohort=Cohort(
            n_patients=oof.n_patients,
            n_scans=oof.n_scans,
            prevalence=oof.prevalence,
            classes=metadata["task"]["classes"],
            modalities=metadata["input"]["modalities"],
            image_kind=metadata["input"]["image_kind"],
            excluded_scans={},
            locked_test_patients=len(splits.get("locked_test", [])),
        ),
        metrics=metrics,
        curves=curves,
        recipe=recipe_section(verified, config),
        transfer_curves=[
            TransferCurve(
                arm=entry["arm"],
                fold=fold["fold"],
                epochs=[r["epoch"] for r in fold["curve"]],
                tune_auc=[r.get("tune_auc") for r in fold["curve"]],
                seconds=[r["seconds"] for r in fold["curve"]],
            )
            for entry in transfer
            for fold in entry["folds"]
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


def _pooling_gap_flagged(transfer: list[dict[str, Any]]) -> bool:
    return any(entry.get("arm") == "main" and entry.get("pooling_gap_flagged") for entry in transfer)


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
