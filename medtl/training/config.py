"""The training configuration (`train.yaml`): one pydantic model, validated before any work starts.

Defaults are a recipe for a small dataset on a CPU laptop: an ImageNet ResNet-18 fine-tuned end to end with
discriminative learning rates, 5 patient-grouped folds, early stopping on a tuning split carved from each fold's
training side, and the comparison arms that answer "did transfer help?" (a linear probe, the same architecture
from scratch, and a logistic regression on the frozen pretrained features, which costs seconds). `medtl plan`
writes a config fitted to a dataset; this file only validates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medtl.contracts import PlanRecord, PreprocessingSpec
from medtl.contracts.task import TaskKind, check_declaration
from medtl.errors import ConfigError, describe_validation_error
from medtl.models.config import ModelConfig
from medtl.models.strategies import StrategyConfig
from medtl.training.augment import AugmentConfig, resolve_flip_axes

M = TypeVar("M", bound=BaseModel)
Arm = Literal["linear_probe", "scratch", "features"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskConfig(_Section):
    """Which scans to learn from, what the classes are and what kind of task they make."""

    kind: TaskKind | None = Field(
        None,
        description="binary, multiclass, ordinal or multilabel; default: the dataset's task.json, else inferred "
        "where unambiguous (ordinal must be declared)",
    )
    classes: list[str] | None = Field(
        None, description="class (or finding) names in index order, lowest grade first; default: sorted labels found"
    )
    positive_class: str | None = Field(None, description="binary tasks: the class the probability is for")
    decision_cut: str | None = Field(
        None, description="ordinal tasks: the decision the model supports is 'grade >= decision_cut'"
    )
    image_kind: Literal["volume", "image2d"] | None = Field(None, description="default: the spec's dimensionality")
    modalities: list[str] | None = Field(None, description="e.g. [CT]; default: every modality of that kind")
    exclude_flags: list[str] = Field(
        default_factory=lambda: ["constant_image", "possible_label_map"],
        description="scans with any of these QC flags are left out (and counted in the artifact)",
    )

    @model_validator(mode="after")
    def _declared(self) -> TaskConfig:
        check_declaration(self.kind, self.classes, self.positive_class, self.decision_cut)
        return self


class CVConfig(_Section):
    n_folds: int = Field(5, ge=2, le=20)
    tune_fraction: float = Field(0.2, gt=0, lt=0.5, description="share of each fold's training side for tuning")
    splits_file: Path | None = Field(None, description="a hand-written splits.json to use instead")


class ScheduleConfig(_Section):
    kind: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)


class EarlyStopConfig(_Section):
    metric: Literal["auc", "loss"] = Field(
        "auc", description="what picks the best epoch on the tuning patients; loss is steadier on tiny tuning sets"
    )
    patience: int = Field(8, ge=1, description="epochs without a better tuning metric before a fold stops")
    min_epochs: int = Field(8, ge=1, description="epochs always trained before stopping may happen")


# settings that change how fast a run goes, never what it trains: not part of a run's identity (its work folder)
SPEED_ONLY = {"concurrent_folds"}
MAX_CONCURRENT_FOLDS = 16


class TrainConfig(_Section):
    model_id: str = Field("medtl-model", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model_version: str = Field("0.1.0", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    intended_use: str = Field(
        "Research use only: classification of the task's images; not validated for clinical decisions.",
        min_length=10,
    )
    task: TaskConfig = Field(default_factory=TaskConfig)
    preprocessing: PreprocessingSpec | None = Field(None, description="default: the dataset's preprocessing.json")
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig(backbone="resnet18", weights={"source": "torchvision"})
    )
    strategy: StrategyConfig = Field(
        default_factory=lambda: StrategyConfig(name="layerwise_lr_decay", lr=1e-3, decay=0.5)
    )
    arms: list[Arm] = Field(
        default_factory=lambda: ["linear_probe", "scratch", "features"],
        description="comparison arms trained on the same splits (transfer indicators); features: frozen pretrained "
        "features + a logistic regression per fold",
    )
    label_fractions: list[float] | None = Field(
        None,
        description="label-efficiency curve: shares of each fold's training patients, each in (0, 1]. Every arm is "
        "also trained per fold on nested, patient-grouped, label-stratified subsets of these sizes (the tuning and "
        "held-out patients stay the same), and the report plots AUROC against the number of labelled patients. The "
        "list is sorted, must not repeat a value, and always includes 1.0 (added when left out); the artifact's "
        "models are those trained on all patients. None or [1.0]: no extra runs",
    )
    epochs: int = Field(30, ge=1, le=1000, description="schedule length in epochs (when `steps` is not set)")
    steps: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="schedule length in optimiser steps; replaces epochs. The same steps and batch size on any "
        "hardware make the same recipe (the plan writes this)",
    )
    batch_size: int = Field(32, ge=1)
    grad_clip: float | None = Field(1.0, gt=0)
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="tune, predict and save an exponential moving average of the weights, updated after every "
        "optimiser step with this decay (ramped up over the first steps); 1 / (1 - decay) is the number of steps it "
        "spans. None: the weights as trained",
    )
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    early_stopping: EarlyStopConfig = Field(default_factory=EarlyStopConfig)
    class_balance: Literal["weighted_loss", "sampler", "none"] = "weighted_loss"
    augmentation: AugmentConfig = Field(default_factory=AugmentConfig)
    test_time_flips: bool = Field(
        False,
        description="average every prediction (tuning, out-of-fold, test, scoring) over the input and its mirror "
        "images along the augmentation's flip axes; recorded in the artifact",
    )
    cv: CVConfig = Field(default_factory=CVConfig)
    final_model: Literal["ensemble", "refit"] = Field(
        "ensemble", description="ensemble: average of the fold models; refit: one model on all training patients"
    )
    seed: int = Field(0, ge=0)
    deterministic: bool = Field(False, description="torch deterministic algorithms (slower; some ops refuse)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off"] = Field("auto", description="mixed precision on CUDA (bf16 where supported)")
    num_workers: int = Field(0, ge=0, description="DataLoader workers (tensors are preprocessed already)")
    concurrent_folds: Annotated[int, Field(ge=1, le=MAX_CONCURRENT_FOLDS)] | Literal["auto"] = Field(
        1,
        description="speed only: how many folds (of any arm) train at once, each in a process of its own; for a "
        "small model on a GPU, which one fold leaves mostly idle (on a CPU it gains little). auto: several on a GPU "
        "as far as its memory and the machine's cores allow, one on a CPU (training.concurrent.fold_width). Not "
        "part of the recipe: the same folds and seeds either way",
    )
    checkpoint_every_s: float = Field(
        120.0,
        ge=0,
        description="write the resume checkpoint (model, optimiser, best weights) at most this often; 0: every "
        "epoch. A resumed fold replays the epochs since, exactly, so this trades redone work for disk writes",
    )
    min_steps_between_tuning: int = Field(
        16,
        ge=1,
        description="optimiser steps, at least, between two predictions of the tuning patients (whole epochs; "
        "always after the last). 1: after every epoch. On tiny sets an epoch is a few steps and predicting after "
        "each one took ~30% of the run; patience and min_epochs count epochs either way",
    )
    ood_false_flag_rate: float = Field(
        0.01,
        gt=0,
        lt=0.5,
        description="share of in-distribution scans the `feature_outlier` flag may mark; its threshold is that "
        "quantile of held-out training scans (recorded in ood/features.json)",
    )
    allow_unsigned: bool = Field(False, description="seal the artifact without a signature (development only)")
    plan: PlanRecord | None = Field(None, description="how `medtl plan` chose this config (kept in the artifact)")

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, values: list[float] | None) -> list[float] | None:
        if values is None:
            return None
        outside = [v for v in values if not 0 < v <= 1]
        if outside:
            raise ValueError(f"label_fractions must lie in (0, 1]; got {outside}")
        if len(set(values)) != len(values):
            raise ValueError("label_fractions must not repeat a value")
        return sorted({*values, 1.0})

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.steps is None and self.early_stopping.min_epochs > self.epochs:
            raise ValueError("early_stopping.min_epochs cannot exceed epochs")
        flips = self.augmentation
        if self.test_time_flips and not (flips.enabled and flips.p_flip > 0 and flips.flip_axes != []):
            raise ValueError(
                "test_time_flips averages over the flips the network trained on, and this augmentation flips "
                "nothing: enable augmentation with p_flip > 0, or set test_time_flips: false"
            )
        return self

    def prediction_flip_axes(self, spatial_dims: int) -> tuple[int, ...]:
        """The spatial axes whose mirror images every prediction averages over (none unless test_time_flips)."""
        return resolve_flip_axes(self.augmentation, spatial_dims) if self.test_time_flips else ()


def load_yaml_model(model: type[M], path: Path | None, overrides: dict[str, Any] | None, *, what: str,
                    fix: str) -> M:  # fmt: skip
    """YAML file + overrides -> a validated config model; every problem reported at once with its key path."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read the {what} ({type(error).__name__})", where=str(path)) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"the {what} must be a mapping of sections", where=str(path))
        data = loaded or {}
    data.update(overrides or {})
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = describe_validation_error(error)
        raise ConfigError(f"invalid {what}: {problems}", where=str(path) if path else "config", fix=fix) from None


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """train.yaml (or plan.yaml) -> TrainConfig."""
    return load_yaml_model(TrainConfig, path, overrides, what="training config",
                           fix="see README 'Training configuration' for every key and its default")  # fmt: skip
