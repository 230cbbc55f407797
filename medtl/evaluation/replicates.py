"""Seed-to-seed spread: the same recipe trained again with another seed, and how much the results move.

Why replicate artifacts and not a `seeds:` list in training: training stays one seed per run (no doubled cost by
default), each replicate is an ordinary signed artifact that can be verified on its own, and a site that wants the
spread trains the replicates when it can afford them (`medtl train ... --out B` with another `seed`) and passes them
to `medtl evaluate A --replicate B --replicate C`. Why the strict check: a spread is only a seed spread when nothing
else changed; an artifact trained on other data, another preprocessing, other weights, other code or another config
would make the spread say something it does not measure, so it is refused, naming what differs. The split may differ
(the seed draws the folds unless `cv.splits_file` fixes them); the result says which.

Why only threshold-free measures (AUROC; binary also AUPRC and Brier score): each run's operating point would be its
own choice on its own predictions, and the spread of sensitivity would mix the threshold rule with the seed. Why out
of fold only: scoring the locked test set with every replicate is more looks at the test set than the one the design
allows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medtl.artifacts.contents import ArtifactContents
from medtl.contracts.evaluation import Estimate, SeedRun, SeedSpread, SpreadSummary
from medtl.errors import ConfigError
from medtl.evaluation.label_efficiency import pooled_auroc
from medtl.evaluation.metrics import auprc_ci


def _config_without_seed(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "seed"}


def replicate_differences(reference: ArtifactContents, other: ArtifactContents) -> list[str]:
    """What makes `other` more than a seed replicate of `reference` (empty: a replicate)."""
    a, b = reference.metadata, other.metadata
    pa, pb = a.provenance, b.provenance
    checks = [
        ("the data manifest", pa.manifest_hash, pb.manifest_hash),
        ("the dataset fingerprint", pa.fingerprint_hash, pb.fingerprint_hash),
        ("the preprocessing", a.preprocessing_hash, b.preprocessing_hash),
        ("the task", reference.task.model_dump(), other.task.model_dump()),
        (
            "the pretrained weights",
            pa.pretrained.sha256 or pa.pretrained.name,
            pb.pretrained.sha256 or pb.pretrained.name,
        ),
        ("the code version", pa.code_version, pb.code_version),
        (
            "the training config (apart from seed)",
            _config_without_seed(reference.verified.read_yaml("config.yaml")),
            _config_without_seed(other.verified.read_yaml("config.yaml")),
        ),
    ]
    return [what for what, mine, theirs in checks if mine != theirs]


def check_replicates(reference: ArtifactContents, others: list[ArtifactContents]) -> None:
    """Refuse any artifact that is not the same recipe with another seed (and a seed used twice)."""
    seeds = {reference.metadata.provenance.seed: reference.verified.folder.name}
    for other in others:
        where = other.verified.folder.name
        if other.verified.manifest_hash == reference.verified.manifest_hash:
            raise ConfigError("a replicate is the evaluated artifact itself", where=where,
                              fix="pass artifacts trained with other seeds")  # fmt: skip
        differences = replicate_differences(reference, other)
        if differences:
            raise ConfigError(
                f"not a seed replicate of the evaluated artifact: {', '.join(differences)} differ(s); a spread over "
                "it would not be a seed-to-seed spread",
                where=where,
                fix="train the replicate on the same dataset with the same config, changing only `seed` (and with "
                "the same medtl version and pretrained weights)",
            )
        seed = other.metadata.provenance.seed
        if seed in seeds:
            raise ConfigError(
                f"seed {seed} appears twice (also in {seeds[seed]}): two runs of one seed are not a spread over seeds",
                where=where,
                fix="pass one artifact per seed",
            )
        seeds[seed] = where


def seed_run(contents: ArtifactContents, *, n_boot: int) -> SeedRun:
    """The threshold-free out-of-fold measures of one run's main arm."""
    task = contents.task
    oof = contents.oof
    main = oof[oof["arm"] == "main"].reset_index(drop=True)
    estimates: list[Estimate] = [pooled_auroc(main, task.kind, task.classes, task.positive_class, n_boot=n_boot)]
    if task.kind == "binary":
        targets = (main["label"].astype(str) == str(task.positive_class)).astype(int).to_numpy()
        scores = main["probability"].to_numpy(dtype=float)
        patients = main["patient_id"].to_numpy()
        estimates.append(auprc_ci(targets, scores, patients, n_boot=n_boot).estimate("auprc", n=int(targets.sum())))
        estimates.append(Estimate(name="brier", value=float(np.mean((scores - targets) ** 2)), n=len(targets)))
    return SeedRun(
        seed=contents.metadata.provenance.seed,
        model_version=contents.metadata.model_version,
        artifact_manifest_hash=contents.verified.manifest_hash,
        estimates=estimates,
    )


def spread_summary(runs: list[SeedRun]) -> list[SpreadSummary]:
    """Median, range and sample SD of each estimate over the runs that report it."""
    names = list(dict.fromkeys(e.name for run in runs for e in run.estimates))
    summary = []
    for name in names:
        values = np.array(
            [e.value for run in runs for e in run.estimates if e.name == name and e.value is not None], dtype=float
        )
        if len(values) < 2:
            continue
        summary.append(
            SpreadSummary(
                name=name,
                n_runs=len(values),
                median=float(np.median(values)),
                minimum=float(values.min()),
                maximum=float(values.max()),
                sd=float(values.std(ddof=1)),
            )
        )
    return summary


def seed_spread(reference: ArtifactContents, others: list[ArtifactContents], *, n_boot: int) -> SeedSpread:
    check_replicates(reference, others)
    runs = [seed_run(contents, n_boot=n_boot) for contents in [reference, *others]]
    split = reference.metadata.provenance.split_hash
    return SeedSpread(
        split_shared=all(other.metadata.provenance.split_hash == split for other in others),
        runs=runs,
        summary=spread_summary(runs),
    )
