"""Assemble and seal the model artifact from a finished cross-validation (layout: medtl/artifacts/README.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safetensors.torch import save as safetensors_save

from medtl.artifacts import (
    ArtifactBuilder,
    PhiTerms,
    collect_provenance,
    environment_text,
    key_fingerprint,
    load_trusted_keys,
    public_key_hex,
    resolve_signing_key,
)
from medtl.artifacts.layout import FINGERPRINT as ARTIFACT_FINGERPRINT
from medtl.artifacts.layout import (
    LABEL_EFFICIENCY,
    LINEAGE,
    OOD_FEATURES,
    OOD_SUMMARY,
    OOF_PREDICTIONS,
    PREPROCESSING,
    RUN_METRICS,
    SPLITS,
    TRANSFER_METRICS,
)
from medtl.contracts.artifact import ArtifactMetadata
from medtl.contracts.base import contract_document
from medtl.contracts.handoff import LabelEfficiencyRow, OodReferenceSummary, OofRow, TransferRecord
from medtl.contracts.lineage import Lineage
from medtl.contracts.training import Splits
from medtl.errors import ConfigError
from medtl.hashing import sha256_json
from medtl.ingest.pipeline import FINGERPRINT
from medtl.ingest.privacy import PRIVATE_DIR
from medtl.models.records import BuiltModel
from medtl.training.config import TrainConfig
from medtl.training.cv import MAIN_ARM, ArmResult
from medtl.training.data import TaskData, TensorSet, rows_of
from medtl.training.feature_ood import KnnReference, artifact_knn_reference, network_features, stage_modules
from medtl.training.feature_reference import FeatureReference, fit_reference, head_module


def phi_terms_for(dataset: Path) -> PhiTerms:
    path = Path(dataset) / PRIVATE_DIR / "phi_terms.json"
    if not path.exists():
        raise ConfigError(
            "the dataset's private/phi_terms.json is missing, so the artifact's PHI gate cannot run",
            where=str(dataset),
            fix="train from the dataset folder that `medtl ingest` wrote (its private/ folder stays at the site)",
        )
    return PhiTerms.load(path)


_PATH_KEYS = ("path", "splits_file")


def without_local_paths(value: Any) -> Any:
    """Local paths become their last component: an artifact must verify on another machine and carry no PHI.

    What a path pointed to is identified by content instead (the pretrained weights' sha256 is in the provenance).
    """
    if isinstance(value, dict):
        return {
            key: (Path(item).name if key in _PATH_KEYS and isinstance(item, str) else without_local_paths(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [without_local_paths(item) for item in value]
    return value


def resolved_config(config: TrainConfig, results: list[ArmResult], task: TaskData) -> dict[str, Any]:
    """The config as run: every default written out, the spec in force, and each arm's resolved schedule."""
    data = config.model_dump(mode="json")
    data["preprocessing"] = task.spec.model_dump(mode="json")
    data["strategy"] = config.strategy.resolved().model_dump(mode="json")
    data["resolved_arms"] = {
        r.arm.name: {"model": r.arm.model.model_dump(mode="json"), "schedule": r.schedule} for r in results
    }
    return without_local_paths(data)


def training_feature_reference(
    network: torch.nn.Module,
    built: BuiltModel,
    task: TaskData,
    splits: Splits,
    device: torch.device,
    batch_size: int,
    *,
    feature_fold: int | None,
    rate: float,
    seed: int = 0,
) -> tuple[FeatureReference, KnnReference | None]:
    """Features of every cross-validated training scan, summarised for the out-of-distribution check: the
    penultimate Mahalanobis reference (kept for comparison and for readers of older artifacts) and the multi-layer
    nearest-neighbour rule that sets the flag (medtl/training/feature_ood.py says why).

    FEATURE_FOLD: the fold whose network scoring reads features from (a fold ensemble); its held-out patients
    calibrate the threshold. None for a refit model: the threshold is then cross-fitted."""
    patients = sorted({p for fold in splits.folds for p in (*fold.train, *fold.tune, *fold.heldout)})
    rows = rows_of(task, patients)
    data = TensorSet(task, rows)
    head = head_module(network, built.head_params)
    modules = stage_modules(network, built.stages, built.stage_names)
    network = network.to(device).eval()
    batches = (
        torch.stack([data[i][0] for i in range(s, min(s + batch_size, len(data)))]).to(device)
        for s in range(0, len(data), batch_size)
    )
    features = network_features(network, head, modules, batches)
    mahalanobis = fit_reference(features["penultimate"])
    if not modules:
        return mahalanobis, None
    fold = next((f for f in splits.folds if f.index == feature_fold), None)
    if fold is not None and fold.heldout:
        heldout = np.isin(rows, rows_of(task, list(fold.heldout)))
        bank, calibration = np.flatnonzero(~heldout), np.flatnonzero(heldout)
    else:
        bank, calibration = np.arange(len(rows)), None
    return mahalanobis, artifact_knn_reference(
        features, modules, bank_rows=bank, calibration_rows=calibration, rate=rate, seed=seed
    )


def ood_summary(mahalanobis: FeatureReference, knn: KnnReference | None) -> OodReferenceSummary:
    if knn is None:
        return OodReferenceSummary(**mahalanobis.summary())
    return OodReferenceSummary(**mahalanobis.summary(), flag="knn_multilayer", knn=knn.summary())


def write_artifact(
    out: Path,
    *,
    config: TrainConfig,
    task: TaskData,
    splits: Splits,
    results: list[ArmResult],
    oof: pd.DataFrame,
    indicators: list[dict[str, Any]],
    final_state: dict[str, torch.Tensor] | None,
    final_built: BuiltModel,
    final_epochs: int | None,
    started_at: datetime,
    device: torch.device,
    run: dict[str, Any],
    flow_run_id: str | None = None,
    label_efficiency: pd.DataFrame | None = None,
    lineage: Lineage | None = None,
) -> str:
    """Write every file, then seal (PHI gate, manifest, signature, `created` event); returns the manifest hash."""
    main = next(r for r in results if r.arm.name == MAIN_ARM)
    builder = ArtifactBuilder(out)
    for fold, state in sorted(main.states.items()):
        builder.add_weights(f"weights/fold{fold}.safetensors", state)
    if final_state is not None:
        builder.add_weights("weights/final.safetensors", final_state)
    config_data = resolved_config(config, results, task)
    builder.add_yaml("config.yaml", config_data)
    builder.add_json(PREPROCESSING, contract_document(task.spec))
    builder.add_json("label_map.json", {name: index for index, name in enumerate(task.classes)})
    builder.add_json(SPLITS, contract_document(splits))
    builder.add_json(LINEAGE, contract_document(lineage or Lineage()))
    builder.add_table(OOF_PREDICTIONS, oof, contract=OofRow)
    if label_efficiency is not None:  # the curve's runs: predictions only, their weights are not kept
        builder.add_table(LABEL_EFFICIENCY, label_efficiency, contract=LabelEfficiencyRow)
    pooled = {entry["arm"]: {"oof_auc": entry["oof_auc"]} for entry in indicators}
    for outcome in main.folds:
        builder.add_json(
            f"metrics/fold{outcome.fold}.json", {k: v for k, v in outcome.__dict__.items() if k != "curve"}
        )
    builder.add_json("metrics/pooled.json", pooled)
    builder.add_json(RUN_METRICS, run)
    builder.add_json(TRANSFER_METRICS, contract_document(TransferRecord(arms=indicators)))
    # What scoring compares new scans with: the training data's statistics and the model's feature distribution.
    builder.add_bytes(ARTIFACT_FINGERPRINT, (task.dataset / FINGERPRINT).read_bytes())
    scoring_network = final_built.model
    if final_state is None:  # an ensemble scores with every fold model; features come from the first, fold 0
        scoring_network.load_state_dict(main.states[min(main.states)])
    mahalanobis, knn = training_feature_reference(
        scoring_network, final_built, task, splits, device, config.batch_size,
        feature_fold=min(main.states) if final_state is None else None, rate=config.ood_false_flag_rate,
        seed=config.seed,
    )  # fmt: skip
    builder.add_bytes(OOD_FEATURES, safetensors_save({**mahalanobis.tensors(), **(knn.tensors() if knn else {})}))
    builder.add_json(OOD_SUMMARY, contract_document(ood_summary(mahalanobis, knn)))
    environment = environment_text()
    provenance = collect_provenance(
        manifest_hash=task.manifest_hash,
        fingerprint_hash=task.fingerprint_hash,
        split_hash=sha256_json(splits.model_dump(mode="json")),
        pretrained=final_built.provenance(),
        seed=config.seed,
        seeds={"split": config.seed, "init_and_loader": config.seed + 1, "per_fold_offset": 1000},
        started_at=started_at,
        finished_at=datetime.now(UTC),
        flow_run_id=flow_run_id,
        environment=environment,
    )
    metadata = ArtifactMetadata(
        model_id=config.model_id,
        model_version=config.model_version,
        task={
            "kind": task.kind,
            "classes": task.classes,
            "positive_class": task.positive_class,
            "decision_cut": task.decision_cut,
            "decision_cut_declared": task.decision_cut_declared,
        },
        intended_use=config.intended_use,
        input={
            "modalities": task.modalities,
            "image_kind": "volume" if task.spatial_dims == 3 else "image2d",
            "channels": task.in_channels,
            "spatial_shape": list(task.spec.target_shape),
            "value_range": (0.0, 1.0),
        },
        output={
            "probability": OUTPUT_MEANING[task.kind].format(positive=task.positive_class),
            "model": "refit on all training patients"
            if final_state is not None
            else f"mean of {len(main.states)} fold models",
            "device": device.type,
        },
        model=dict(final_built.spec),
        prediction_flip_axes=list(config.prediction_flip_axes(task.spatial_dims)),
        preprocessing_hash=task.spec_hash,
        config_hash=sha256_json(config_data),
        provenance=provenance,
    )
    builder.add_metadata(metadata)
    builder.add_environment(environment)
    summary = {
        "patients": int(task.scans["patient_id"].nunique()),
        "scans": len(task.scans),
        "locked_test_patients": len(splits.locked_test),
        "excluded_scans": task.excluded,
        "final_model": config.final_model + (f" ({final_epochs} epochs)" if final_epochs else ""),
    }
    builder.add_model_card(
        metrics={f"{name} OOF AUROC": value["oof_auc"] for name, value in pooled.items()},
        fold_metrics=[{"fold": o.fold, "best_epoch": o.best_epoch, "tune_auc": o.best_tune_auc} for o in main.folds],
        data_summary=summary,
    )
    key = signing_key_for(config.allow_unsigned)
    return builder.seal(signing_key=key, phi_terms=phi_terms_for(task.dataset), allow_unsigned=config.allow_unsigned)


OUTPUT_MEANING = {
    "binary": "P({positive}) from softmax",
    "multiclass": "softmax over task.classes",
    "ordinal": "grade probabilities from CORN conditional logits (one per cut between neighbouring grades)",
    "multilabel": "one sigmoid probability per finding in task.classes",
}


def run_record(config: TrainConfig, started_at: datetime, device: torch.device) -> dict[str, Any]:
    """Wall time of the run (planning included when the run was planned) and whether it met the plan's budget."""
    plan = config.plan
    planning = plan.planning_seconds if plan else 0.0
    wall = planning + (datetime.now(UTC) - started_at).total_seconds()
    budget = plan.budget_minutes * 60 if plan and plan.budget_minutes else None
    return {
        "device": device.type,
        "planning_seconds": round(planning, 1),
        "wall_seconds": round(wall, 1),
        "budget_seconds": budget,
        "met_budget": None if budget is None else wall <= budget,
        "estimated_train_seconds": plan.estimate.train_seconds if plan else None,
        "steps": config.steps,
        "batch_size": config.batch_size,
    }


def signing_key_for(allow_unsigned: bool) -> Ed25519PrivateKey | None:
    """The pipeline key that will seal the artifact, checked before any training (a missing or untrusted key found
    after an hour of cross-validation wastes the hour)."""
    key = resolve_signing_key()
    if key is None:
        if allow_unsigned:
            return None
        raise ConfigError(
            "no signing key for the artifact",
            fix="set MEDTL_SIGNING_KEY to an Ed25519 private key (PEM file or text; `medtl keys generate PATH` "
            "makes one), or set allow_unsigned: true in the training config for development runs",
        )
    trusted = load_trusted_keys()
    if trusted is not None and public_key_hex(key) not in trusted:
        raise ConfigError(
            f"the signing key {key_fingerprint(public_key_hex(key))} is not among MEDTL_TRUSTED_KEYS: this site would "
            "refuse the artifact it seals",
            fix="sign with the pipeline key whose public key is in MEDTL_TRUSTED_KEYS, or add this key's .pub there",
        )
    return key
