"""The typed train → evaluate → score boundary: artifacts hand on contract-checked files, and the one reader refuses
a file that breaks its contract by naming the file and the key."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medtl.artifacts import open_verified
from medtl.artifacts.contents import ArtifactContents
from medtl.contracts.artifact import AuditEvent
from medtl.contracts.base import validate_frame
from medtl.contracts.handoff import OofRow, TransferRecord, evaluated_payload
from medtl.errors import DataContractError
from medtl.training.train import train
from support.trained import ingested_cohort, signing_key, tiny_config

PSEUDO = "P-" + "1" * 16


def oof_row(**extra: object) -> dict:
    row = {"scan_id": "X-" + "0" * 16, "patient_id": PSEUDO, "study_id": None, "label": "1", "target": 1,
           "fold": 0, "arm": "main", "p_0": 0.3, "p_1": 0.7}  # fmt: skip
    row.update(extra)
    return row


def test_oof_rows_allow_only_probability_and_finding_columns():
    validate_frame(OofRow, pd.DataFrame([oof_row(y_a=0, p_a=0.9), oof_row(y_a=1, p_a=0.2)]))
    for bad in ({"patient_name": "x"}, {"p_1": 1.5}, {"y_a": 2}):
        with pytest.raises(DataContractError) as raised:
            validate_frame(OofRow, pd.DataFrame([oof_row(**bad)]))
        assert next(iter(bad)) in str(raised.value)


def test_evaluated_payload_is_typed():
    event = AuditEvent.model_construct(index=3, kind="evaluated", payload={
        "files": {"report.html": "a" * 64}, "evaluated_on": ["oof"],
        "operating_point": {"rule": "youden", "threshold": 0.4, "chosen_on": "oof"},
        "operating_points": {"ge_2": {"rule": "youden", "threshold": 0.4, "chosen_on": "oof"}},
    })  # fmt: skip
    payload = evaluated_payload(event)
    assert payload.operating_points["ge_2"].threshold == 0.4
    event.payload["files"] = {"report.html": "not a hash"}
    with pytest.raises(DataContractError, match="evaluated"):
        evaluated_payload(event)


@pytest.mark.slow
def test_trained_artifact_hands_on_typed_files(tmp_path):
    dataset = ingested_cohort(tmp_path, "cohort", patients=16, seed=5)
    with signing_key(tmp_path / "k.pem"):
        train(dataset, tiny_config(), tmp_path / "model")
        contents = ArtifactContents(open_verified(tmp_path / "model"))
        assert contents.task.kind == "binary"
        transfer = contents.transfer
        assert transfer.arms[0].arm == "main" and transfer.arm("main") is transfer.arms[0]
        oof = contents.oof
        main = oof[oof["arm"] == "main"]
        assert sorted(main["patient_id"].unique()) == sorted(p for f in contents.splits.folds for p in f.heldout)
        assert (oof["p_0"] + oof["p_1"]).round(5).eq(1).all()
        assert contents.ood_summary.n == len(main)
        # the transfer record's fold curves are the ones the folds recorded
        raw = json.loads((tmp_path / "model" / "metrics" / "transfer.json").read_text())
        assert (
            raw["contract"] == "transfer_metrics"
            and TransferRecord.model_validate({"arms": raw["arms"]}).arm("main").folds[0].curve[0].epoch == 1
        )
