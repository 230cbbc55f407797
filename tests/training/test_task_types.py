"""Task types in training: rank-consistent ordinal outputs, per-finding weighting, multi-label patient splits,
task-type resolution from config, task.json and the labels themselves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from coral_pytorch.losses import corn_loss
from pydantic import ValidationError

from medtl.contracts import write_json
from medtl.contracts.task import TaskDeclaration, endpoints, findings_of, infer_kind, looks_graded, output_units
from medtl.models.heads import ordinal_class_probabilities, probabilities
from medtl.training.config import TaskConfig
from medtl.training.loop import auc
from medtl.training.losses import class_weights, finding_weights, make_loss
from medtl.training.losses import corn_loss as weighted_corn
from medtl.training.splits import make_splits

HASH = "b" * 64


def test_ordinal_probabilities_are_rank_consistent_and_sum_to_one():
    logits = torch.randn(64, 4) * 3
    classes = ordinal_class_probabilities(logits)
    assert classes.shape == (64, 5)
    assert torch.allclose(classes.sum(dim=1), torch.ones(64), atol=1e-6)
    assert (classes >= 0).all()
    above = 1 - torch.cumsum(classes, dim=1)[:, :-1]  # P(grade > k) for k = 0..3
    assert (above[:, 1:] <= above[:, :-1] + 1e-6).all()
    # P(grade > 0) is the first conditional probability itself
    assert torch.allclose(above[:, 0], torch.sigmoid(logits[:, 0]), atol=1e-6)


def test_ordinal_training_learns_the_grade_order():
    """A linear model fitted with the CORN loss on a 1-D feature ranks grades in order."""
    torch.manual_seed(0)
    grades = torch.randint(0, 4, (400,))
    features = grades.float().unsqueeze(1) + 0.3 * torch.randn(400, 1)
    model = torch.nn.Linear(1, output_units("ordinal", 4))
    loss = make_loss("ordinal", grades, 4, weighted=True, device=torch.device("cpu"))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        value = loss(model(features), grades)
        value.backward()
        optimiser.step()
    unweighted = make_loss("ordinal", grades, 4, weighted=False, device=torch.device("cpu"))
    with torch.no_grad():
        assert float(unweighted(model(features), grades)) == pytest.approx(
            float(corn_loss(model(features), grades, num_classes=4))
        )
    predicted = probabilities(model(features), "ordinal").argmax(dim=1)
    assert (predicted == grades).float().mean() > 0.85


def test_corn_loss_equals_the_reference_and_weights_rare_grades():
    torch.manual_seed(1)
    logits, grades = torch.randn(50, 3), torch.randint(0, 4, (50,))
    assert float(weighted_corn(logits, grades)) == pytest.approx(float(corn_loss(logits, grades, num_classes=4)))
    weights = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert float(weighted_corn(logits, grades, weights)) == pytest.approx(float(corn_loss(logits, grades, 4)))
    # a weight moves the loss towards the weighted grade's terms: with grade 3 weighted up, the loss is the
    # weighted mean of per-answer losses, computed here by hand for the last cut only
    rare = torch.tensor([1.0, 1.0, 1.0, 5.0])
    per_answer = []
    for cut in range(3):
        for i in torch.nonzero(grades >= cut).flatten():
            target = float(grades[i] > cut)
            value = float(torch.nn.functional.binary_cross_entropy_with_logits(logits[i, cut], torch.tensor(target)))
            per_answer.append((value, float(rare[grades[i]])))
    expected = sum(v * w for v, w in per_answer) / sum(w for _, w in per_answer)
    assert float(weighted_corn(logits, grades, rare)) == pytest.approx(expected, rel=1e-5)
    assert class_weights(grades, 4).shape == (4,)


def test_finding_weights_follow_prevalence_and_are_capped():
    findings = torch.zeros(1000, 3)
    findings[:500, 0] = 1  # balanced: weight 1
    findings[:100, 1] = 1  # 1 in 10: weight 9
    findings[:1, 2] = 1  # 1 in 1000: capped
    weights = finding_weights(findings)
    assert weights.tolist() == pytest.approx([1.0, 9.0, 50.0])


def test_kind_inference_and_declaration_rules():
    assert infer_kind({"0", "1"}) == "binary"
    assert infer_kind({"a", "b", "c"}) == "multiclass"
    assert infer_kind({"0", "1", "2", "3"}) == "multiclass"  # grades must be declared
    assert infer_kind({"effusion|nodule", "none", "nodule"}) == "multilabel"
    assert looks_graded({"0", "1", "2"}) and not looks_graded({"0", "2", "5"})
    assert findings_of("effusion|nodule") == ["effusion", "nodule"] and findings_of("none") == []
    with pytest.raises(ValidationError):
        TaskConfig(kind="ordinal", classes=["0", "1"])
    with pytest.raises(ValidationError):
        TaskConfig(kind="ordinal", classes=["0", "1", "2"], decision_cut="0")
    with pytest.raises(ValidationError):
        TaskDeclaration(kind="multilabel", classes=["none", "effusion"])


def test_endpoints_turn_every_task_into_binary_decisions():
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    cuts = endpoints("ordinal", ["0", "1", "2", "3"])
    assert [e.display for e in cuts] == ["grade >= 1", "grade >= 2", "grade >= 3"]
    assert cuts[1].probability(probs).tolist() == pytest.approx([0.7, 0.2])
    assert cuts[1].truth(np.array([1, 2, 3])).tolist() == [0, 1, 1]
    findings = endpoints("multilabel", ["a", "b"])
    assert findings[1].truth(np.array([[1, 0], [1, 1]])).tolist() == [0, 1]


def test_multilabel_auc_is_the_mean_of_defined_per_finding_aucs():
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.1, 0.2], [0.2, 0.8, 0.1], [0.6, 0.3, 0.3], [0.1, 0.4, 0.4]])
    # finding 0: perfect (1.0); finding 1: positives 0.8, 0.3 vs negatives 0.1, 0.4 -> 3/4; finding 2: undefined
    assert auc(targets, probs, None, "multilabel") == pytest.approx((1.0 + 0.75) / 2)


def multilabel_scans(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        findings = [name for name, share in (("a", 0.5), ("b", 0.2), ("c", 0.1)) if rng.random() < share]
        label = "|".join(findings) or "none"
        for s in range(2):
            rows.append({"scan_id": f"X-{p:04d}{s:012d}", "patient_id": f"P-{p:016x}", "label": label, "split": None})
    return pd.DataFrame(rows)


def test_multilabel_splits_keep_patients_whole_and_every_finding_in_every_fold():
    scans = multilabel_scans()
    splits = make_splits(scans, n_folds=3, tune_fraction=0.2, seed=1, manifest_hash=HASH, kind="multilabel")
    assert splits.method == "multilabel_iterative_stratification"
    by_patient = scans.drop_duplicates("patient_id").set_index("patient_id")["label"]
    totals = {name: sum(name in findings_of(v) for v in by_patient) for name in "abc"}
    for fold in splits.folds:
        sides = [set(fold.train), set(fold.tune), set(fold.heldout)]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        for name in "abc":
            held = sum(name in findings_of(by_patient[p]) for p in fold.heldout)
            assert held >= 1  # every finding present in every held-out fold
            assert abs(held - totals[name] / 3) <= max(2, totals[name] * 0.25)
    heldout = sorted(p for fold in splits.folds for p in fold.heldout)
    assert heldout == sorted(by_patient.index)


def test_task_json_declares_the_kind_and_order(tmp_path):
    write_json(
        TaskDeclaration(kind="ordinal", classes=["low", "mid", "high"], decision_cut="high"), tmp_path / "t.json"
    )
    from medtl.contracts import read_json

    declared = read_json(TaskDeclaration, tmp_path / "t.json")
    assert declared.kind == "ordinal" and declared.classes == ["low", "mid", "high"]


@pytest.mark.parametrize("seed", range(6))
def test_the_tuning_auroc_is_scikit_learns_for_every_task_type(seed):
    """Training picks epochs with the rank AUROC evaluation uses (medtl.ranking); it must be sklearn's value, tied
    scores included, a class missing from a small tuning set included."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = 40
    binary = np.round(rng.random((n, 2)), 1)  # rounded: many ties
    labels = rng.integers(0, 2, n)
    assert auc(labels, binary, 1, "binary") == pytest.approx(roc_auc_score(labels, binary[:, 1]), abs=1e-12)
    assert auc(labels, binary, 0, "binary") == pytest.approx(roc_auc_score(labels == 0, binary[:, 0]), abs=1e-12)
    three = np.round(rng.dirichlet(np.ones(3), n), 1)
    classes = rng.integers(0, 3, n)
    expected = roc_auc_score(classes, three / three.sum(1, keepdims=True), multi_class="ovr", average="macro")
    assert auc(classes, three / three.sum(1, keepdims=True), None, "multiclass") == pytest.approx(expected, abs=1e-12)
    two_present = np.where(classes == 2, 0, classes)  # class 2 absent: macro over the two present
    expected = np.mean([roc_auc_score(two_present == k, three[:, k]) for k in (0, 1)])
    assert auc(two_present, three, None, "multiclass") == pytest.approx(expected, abs=1e-12)
    findings = rng.integers(0, 2, (n, 3)).astype(float)
    findings[:, 2] = 1.0  # no negative: left out
    scores = np.round(rng.random((n, 3)), 1)
    expected = np.mean([roc_auc_score(findings[:, k], scores[:, k]) for k in (0, 1)])
    assert auc(findings, scores, None, "multilabel") == pytest.approx(expected, abs=1e-12)
    assert auc(np.zeros(n, dtype=int), binary, 1, "binary") is None
