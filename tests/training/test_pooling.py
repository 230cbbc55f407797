"""Honest pooling: each fold's own held-out AUROC beside the pooled out-of-fold AUROC, and a flag when they differ."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from medtl.training.cv import POOLING_GAP, transfer_indicators


def _oof(scales: list[tuple[float, float]], per_fold: int = 20, seed: int = 0) -> pd.DataFrame:
    """Per fold, scores that rank the fold's own patients well but sit in the band (low, high)."""
    rng = np.random.default_rng(seed)
    frames = []
    for fold, (low, high) in enumerate(scales):
        target = np.tile([0, 1], per_fold // 2)
        score = low + (high - low) * (0.8 * target + 0.2 * rng.random(per_fold))
        frames.append(pd.DataFrame({"arm": "main", "fold": fold, "target": target, "p_0": 1 - score, "p_1": score}))
    return pd.concat(frames, ignore_index=True)


def _indicators(oof: pd.DataFrame) -> dict:
    folds = [
        SimpleNamespace(fold=f, best_epoch=1, best_tune_auc=None, curve=[], seconds=1.0, features=None)
        for f in sorted(oof.fold.unique())
    ]
    arm = SimpleNamespace(name="main", strategy=SimpleNamespace(name="full"))
    result = SimpleNamespace(arm=arm, pretrained={"source": "none"}, folds=folds)
    task = SimpleNamespace(classes=["0", "1"], positive_class="1", kind="binary")
    [entry] = transfer_indicators([result], oof, task)
    return entry


def test_folds_on_different_scales_are_flagged():
    entry = _indicators(_oof([(0.0, 0.3), (0.7, 1.0)]))
    assert [f["heldout_auc"] for f in entry["folds"]] == [1.0, 1.0]
    assert entry["median_fold_auc"] == 1.0 and entry["oof_auc"] < 1.0 - POOLING_GAP
    assert entry["pooling_gap"] == 1.0 - entry["oof_auc"] and entry["pooling_gap_flagged"]


def test_folds_on_one_scale_are_not_flagged():
    entry = _indicators(_oof([(0.0, 1.0), (0.0, 1.0)]))
    assert entry["oof_auc"] == 1.0 and entry["pooling_gap"] == 0.0 and not entry["pooling_gap_flagged"]


def test_the_report_says_so_on_page_one_when_flagged():
    from medtl.evaluation.evaluate import _pooling_limitations

    def metrics(gap, pooling="fold_median"):
        main = SimpleNamespace(arm="main", pooling_gap=gap, fold_aucs=[0.93, None], auc=SimpleNamespace(value=0.71))
        oof = SimpleNamespace(operating_point=SimpleNamespace(pooling=pooling))
        return SimpleNamespace(transfer=[main], evaluations=[oof])

    [sentence] = _pooling_limitations(metrics(0.2))
    assert "(0.930, n/a)" in sentence and "(0.710)" in sentence and "by 0.200" in sentence
    assert "median of the thresholds" in sentence
    [bound] = _pooling_limitations(metrics(0.2, pooling="pooled"))  # a declared sensitivity bound stays pooled
    assert "chosen on the pooled predictions" in bound
    assert _pooling_limitations(metrics(POOLING_GAP)) == [] and _pooling_limitations(metrics(None)) == []
