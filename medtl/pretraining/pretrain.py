"""`medtl pretrain`: ingested scans without labels -> a sealed `pretrained` artifact, a weight source for training.

The artifact holds the backbone only (the projection or decoder of the objective is dropped, and there is no
classification head), with what it learned from (datasets by content hash, every excluded patient), how (method,
epochs, loss curve) and the usual provenance; `weights: {source: artifact, path: ...}` and `medtl plan
--weights-artifact` read it through the same verified path as any medtl artifact.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from medtl.artifacts import ArtifactBuilder, PhiTerms, collect_provenance, environment_text
from medtl.artifacts.layout import MODEL_CARD, PREPROCESSING, PRETRAINING
from medtl.contracts.artifact import ArtifactMetadata
from medtl.contracts.base import contract_document
from medtl.contracts.pretraining import PretrainingRecord
from medtl.errors import ConfigError
from medtl.hashing import sha256_json
from medtl.models.artifact_index import remember
from medtl.models.factory import create_model_from_config
from medtl.outputs import staged_folder
from medtl.pretraining.config import PretrainConfig
from medtl.pretraining.loop import LoopState, run_loop
from medtl.pretraining.methods import make_method
from medtl.pretraining.pool import Pool, PoolSet, build_pool
from medtl.training.cv import seed_everything
from medtl.training.package import phi_terms_for, signing_key_for, without_local_paths
from medtl.training.train import choose_device, claim_workdir

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    artifact: Path
    manifest_hash: str
    record: PretrainingRecord

    def describe(self) -> str:
        record = self.record
        first, last = record.curve[0].loss, record.curve[-1].loss
        budget = " (shortened to fit the time budget)" if record.stopped_by == "time_budget" else ""
        return "\n".join(
            [
                f"pretrained artifact: {self.artifact} (manifest sha256 {self.manifest_hash[:16]}...)",
                f"{record.method} on {record.scans} scans of {len(record.datasets)} dataset(s); "
                f"{record.exclusion.locked_test_patients} locked-test patients excluded",
                f"{record.epochs_done} epochs{budget}, loss {first:.4f} -> {last:.4f}, "
                f"{record.wall_seconds / 60:.1f} min",
                f"use it: model: {{backbone: {record.backbone}, weights: {{source: artifact, path: {self.artifact}}}}}",
            ]
        )


def pretrain(
    datasets: list[Path],
    config: PretrainConfig,
    out: Path,
    *,
    progress: bool = False,
    flow_run_id: str | None = None,
) -> PretrainResult:
    """Pretrain, then write and seal the artifact; an interrupted run resumes from `<out>.work/`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"the artifact folder {out.name} already exists and is not empty", fix="choose a new --out")
    key = signing_key_for(config.allow_unsigned)  # before any work: a missing key found after hours wastes them
    started = datetime.now(UTC)
    seed_everything(config.seed)
    device = choose_device(config.device)
    datasets = [Path(d) for d in datasets]
    pool = build_pool(datasets, config.scans, config.preprocessing, config.exclude_patients_of)
    data = PoolSet(pool.paths)
    built = create_model_from_config(
        config.model, in_channels=pool.in_channels, num_classes=1, spatial_dims=pool.spatial_dims
    )
    sample = torch.stack([data[i] for i in range(min(2, len(data)))])
    method = make_method(config.method, built, sample, config)
    workdir = out.with_name(out.name + ".work")
    identity = sha256_json({"config": without_local_paths(config.model_dump(mode="json")),
                            "data": [use.model_dump() for use in pool.datasets], "spec": pool.spec_hash})  # fmt: skip
    claim_workdir(workdir, identity)
    state = run_loop(method, data, config, device=device, workdir=workdir, progress=progress)
    record = _record(config, pool, built.backbone, built.provenance(), method, state, device)
    with staged_folder(out, what="the pretrained artifact folder") as staging:
        manifest_hash = _write(staging, config, pool, built, method, record, started, key, flow_run_id)
    shutil.rmtree(workdir, ignore_errors=True)
    remember(
        out,
        manifest_hash,
        {
            "model_id": config.model_id,
            "backbone": built.backbone,
            "spatial_dims": pool.spatial_dims,
            "method": config.method,
            "scans": record.scans,
        },
    )
    return PretrainResult(out, manifest_hash, record)


def _record(config: PretrainConfig, pool: Pool, backbone: str, initial: dict, method: torch.nn.Module,
            state: LoopState, device: torch.device) -> PretrainingRecord:  # fmt: skip
    return PretrainingRecord(
        method=config.method,
        method_details=dict(method.details),
        backbone=backbone,
        initial_weights=str(initial.get("name", "none")),
        datasets=pool.datasets,
        exclusion=pool.exclusion,
        patients_used=pool.patients,
        scans=len(pool.paths),
        batch_size=min(config.batch_size, len(pool.paths)),
        steps=state.steps,
        epochs_configured=config.epochs,
        epochs_scheduled=state.epochs_scheduled,
        epochs_done=state.epochs_done,
        stopped_by=state.stopped_by,  # type: ignore[arg-type]
        time_budget_minutes=config.time_budget_minutes,
        wall_seconds=round(state.elapsed, 2),
        device=device.type,
        curve=state.curve,
        seed=config.seed,
        spec_hash=pool.spec_hash,
    )


def _write(folder: Path, config: PretrainConfig, pool: Pool, built, method, record: PretrainingRecord,
           started: datetime, key, flow_run_id: str | None) -> str:  # fmt: skip
    builder = ArtifactBuilder(folder)
    encoder_state = {name: tensor.detach().cpu().contiguous() for name, tensor in method.encoder.state_dict().items()}
    builder.add_weights("weights/final.safetensors", encoder_state)
    builder.add_json(PREPROCESSING, contract_document(pool.spec))
    builder.add_json(PRETRAINING, contract_document(record))
    config_data = without_local_paths(config.model_dump(mode="json"))
    config_data["exclude_patients_of"] = [Path(p).name for p in config.exclude_patients_of]
    builder.add_yaml("config.yaml", config_data)
    environment = environment_text()
    provenance = collect_provenance(
        manifest_hash=sha256_json(sorted(use.manifest_hash for use in pool.datasets)),
        fingerprint_hash=sha256_json(sorted(use.fingerprint_hash for use in pool.datasets)),
        split_hash=sha256_json(record.exclusion.model_dump(mode="json")),
        pretrained=built.provenance(),
        seed=config.seed,
        seeds={"init": config.seed, "epoch_order": config.seed * 100_003},
        started_at=started,
        finished_at=datetime.now(UTC),
        flow_run_id=flow_run_id,
        environment=environment,
    )
    metadata = ArtifactMetadata(
        kind="pretrained",
        model_id=config.model_id,
        model_version=config.model_version,
        intended_use="A backbone from self-supervised pretraining on unlabelled scans: a starting point for "
        "training medtl models, not a model; it makes no prediction.",
        input={
            "modalities": pool.modalities,
            "image_kind": "volume" if pool.spatial_dims == 3 else "image2d",
            "channels": pool.in_channels,
            "spatial_shape": list(pool.spec.target_shape),
            "value_range": (0.0, 1.0),
        },
        output={"features": "pooled backbone features; no head (the task's head is added when a model is trained)"},
        model=dict(built.spec),
        preprocessing_hash=pool.spec_hash,
        config_hash=sha256_json(config_data),
        provenance=provenance,
    )
    builder.add_metadata(metadata)
    builder.add_environment(environment)
    builder.add_text(MODEL_CARD, _card(config, record))
    terms = PhiTerms.merged([phi_terms_for(dataset) for dataset in pool.folders])
    return builder.seal(signing_key=key, phi_terms=terms, allow_unsigned=config.allow_unsigned)


def _card(config: PretrainConfig, record: PretrainingRecord) -> str:
    """The model card of a backbone: what it is for, what it saw, what it did not see, how training went."""
    data = "\n".join(f"- {use.name}: {use.scans} scans, {use.patients} patients" for use in record.datasets)
    first, last = record.curve[0], record.curve[-1]
    budget = "; shortened to fit the time budget" if record.stopped_by == "time_budget" else ""
    return (
        f"# {config.model_id} {config.model_version} (pretrained backbone)\n\n"
        "A backbone from self-supervised pretraining on unlabelled scans. It makes no prediction: it is the starting "
        "point of a model trained with `weights: {source: artifact, path: THIS_FOLDER}`, whose own evaluation is "
        "what a reviewer signs.\n\n"
        f"## Pretraining\n\n- method: {record.method} ({record.method_details.get('loss', '')})\n"
        f"- backbone: {record.backbone}, starting from: {record.initial_weights}\n"
        f"- {record.epochs_done} epochs of {record.epochs_configured} configured{budget}; {record.steps} steps of "
        f"{record.batch_size} scans on {record.device}\n"
        f"- loss: {first.loss:.4f} (epoch 1) -> {last.loss:.4f} (epoch {last.epoch})\n\n"
        f"## Data\n\n{data}\n\n"
        f"Excluded: {len(record.exclusion.patients)} patients ({record.exclusion.locked_test_patients} from locked "
        f"test splits, {record.exclusion.named_dataset_patients} from named datasets), {record.exclusion.scans} "
        "scans. Their pseudonyms are listed in metrics/pretraining.json, so any later test set can be checked "
        "against them.\n"
    )
