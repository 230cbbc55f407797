"""Shared helpers of the artifact tests (a uniquely named module, so that no other conftest shadows it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medtl.artifacts import ArtifactBuilder, PhiTerms
from medtl.artifacts.layout import CONFIG, LABEL_MAP, OOF_PREDICTIONS, POOLED_METRICS, PREPROCESSING, SPLITS
from medtl.contracts.artifact import ArtifactMetadata
from medtl.hashing import sha256_json

# Identifiers in the form the synthetic cohort's DICOM headers carry them (FAMILY^GIVEN, MRN..., ACC..., YYYYMMDD).
PHI = PhiTerms(
    patient_names=["NOVAK^ANNA", "MORENO^PIOTR^JAN", "VAN DER BERG^PIETER", "LI^ED", "KOWALSKI^MAX"],
    patient_ids=["MRN4664774", "00456789", "12"],
    birth_dates=["19800102", "19751231"],
    accession_numbers=["ACC20240001"],
    paths=[
        "dicom/MRN4664774/1.2.826.0.1.3680043.8.498.37802268467257087237790893393912378827/1.dcm",
        "/srv/pacs/incoming/NOVAK_ANNA_2019/CT_1/IM0001.dcm",
        "C:\\PACS\\export\\Moreno_Piotr\\IM0002.dcm",
    ],
)


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        return torch.softmax(self.head(features), dim=1)


def make_model(seed: int) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that buffers matter too
        model.norm.running_mean.uniform_(-0.5, 0.5)
        model.norm.running_var.uniform_(0.5, 2.0)
    return model.eval()


def model_inputs() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((5, 1, 16, 16)).astype(np.float32))


@dataclass
class Built:
    folder: Path
    manifest_hash: str
    models: dict[str, TinyNet]
    predictions: dict[str, torch.Tensor]
    oof: pd.DataFrame
    config: dict[str, Any]


def write_contents(builder: ArtifactBuilder, provenance: dict[str, Any], environment: str) -> Built:
    models = {name: make_model(seed) for seed, name in enumerate(["fold0", "fold1", "final"])}
    inputs = model_inputs()
    with torch.no_grad():
        predictions = {name: model(inputs) for name, model in models.items()}
    for name, model in models.items():
        builder.add_weights(name, model.state_dict(), metadata={"fold": name})
    config = {"backbone": "tinynet", "optimizer": "adamw", "lr": 0.001, "epochs": 3, "folds": 2, "seed": 7}
    preprocessing = {
        "spatial_dims": 2,
        "target_shape": [16, 16],
        "channels": 1,
        "intensity": {"kind": "percentile", "lower": 0.5, "upper": 99.5},
    }
    builder.add_yaml(CONFIG, config)
    builder.add_json(PREPROCESSING, preprocessing)
    builder.add_json(LABEL_MAP, {"normal": 0, "finding": 1})
    builder.add_json(SPLITS, {"method": "stratified_group_kfold", "seed": 7, "folds": [["P-0123456789abcdef"]]})
    oof = pd.DataFrame(
        {
            "scan_id": [f"X-{i:016x}" for i in range(6)],
            "patient_id": [f"P-{i:016x}" for i in range(6)],
            "fold": [0, 0, 0, 1, 1, 1],
            "label": [0, 1, 0, 1, 1, 0],
            "probability": [0.123456, 0.9, 0.2, 0.75, 0.66, 0.1],
        }
    )
    builder.add_table(OOF_PREDICTIONS, oof)
    pooled = {"auroc": {"value": 0.91, "ci_low": 0.8, "ci_high": 0.97}, "sensitivity": 0.85, "intensity_max": 1.0}
    builder.add_json(POOLED_METRICS, pooled)
    builder.add_json("metrics/fold0.json", {"auroc": 0.9})
    builder.add_json("metrics/fold1.json", {"auroc": 0.92})
    metadata = ArtifactMetadata(
        model_id="tinynet-demo",
        model_version="1.0.0",
        task={"kind": "binary", "classes": ["normal", "finding"], "positive_class": "finding"},
        intended_use="Research demonstration on synthetic data only.",
        input={
            "modalities": ["CT"],
            "image_kind": "image2d",
            "channels": 1,
            "spatial_shape": [16, 16],
            "value_range": (0.0, 1.0),
        },
        output={"probability": "P(finding), softmax output"},
        model={"backbone": "tinynet", "in_channels": 1, "num_classes": 2, "spatial_dims": 2},
        preprocessing_hash=sha256_json(preprocessing),
        config_hash=sha256_json(config),
        provenance=provenance,
    )
    builder.add_metadata(metadata)
    builder.add_environment(environment)
    builder.add_model_card(
        metrics=pooled, fold_metrics=[{"auroc": 0.9}, {"auroc": 0.92}], data_summary={"patients": 6, "scans": 6}
    )
    return Built(builder.folder, "", models, predictions, oof, config)
