"""`deploy/prefect.yaml` deploys as written: work pools from deploy/work-pools/, every deployment registered on a
real `prefect server start` (loopback, stopped by process id), schedules and parameters as the flows expect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from pipelines.end_to_end import EndToEndParameters
from pipelines.ingest import IngestParameters
from pipelines.pacs import PacsScoreParameters
from pipelines.score import ScoreParameters
from pipelines.server import local_prefect_server
from pipelines.train import TrainParameters

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
POOLS = {"medtl-cpu": ("process", "process"), "medtl-gpu-docker": ("docker", "docker-gpu"),
         "medtl-gpu-k8s": ("kubernetes", "kubernetes-gpu")}  # fmt: skip
PARAMETERS = {"medtl-score": ScoreParameters, "medtl-end-to-end": EndToEndParameters, "medtl-train": TrainParameters,
              "medtl-score-pacs": PacsScoreParameters, "medtl-ingest": IngestParameters}  # fmt: skip


def _prefect(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_every_deployment_in_the_yaml_registers_with_its_schedule_pool_and_valid_parameters(tmp_path):
    declared = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())["deployments"]
    with local_prefect_server(tmp_path / "prefect-home") as url:
        env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "prefect-home")}
        for pool, (kind, template) in POOLS.items():
            _prefect(["work-pool", "create", pool, "--type", kind, "--base-job-template",
                      str(ROOT / "deploy" / "work-pools" / f"{template}.json")], env)  # fmt: skip
        _prefect(["--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml"], env)
        with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            deployments = {d.name: d for d in client.read_deployments()}
            flows = {d.name: client.read_flow(d.flow_id).name for d in deployments.values()}
            k8s = client.read_work_pool("medtl-gpu-k8s")

    assert set(deployments) == {entry["name"] for entry in declared}
    for entry in declared:
        deployment = deployments[entry["name"]]
        assert deployment.entrypoint == entry["entrypoint"]
        assert deployment.work_pool_name == entry["work_pool"]["name"]
        crons = [schedule.schedule.cron for schedule in deployment.schedules]
        assert crons == [schedule["cron"] for schedule in entry.get("schedules", [])]
        # The stored parameters are what the flow will validate at run time: they must pass now, not at 2 a.m.
        PARAMETERS[flows[entry["name"]]].model_validate(deployment.parameters["params"])
    assert deployments["weekly-retraining"].job_variables == {"gpu_count": 1}
    limits = k8s.base_job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert limits["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
