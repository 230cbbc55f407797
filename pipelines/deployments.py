"""Flows as deployments need them: the training and ingest flows bound to the site's Dask cluster.

A deployment names an importable flow object, so the Dask variant is built here at import, from
MEDTL_DASK_ADDRESS (e.g. tcp://dask-scheduler:8786); without it, a LocalCluster of two worker processes.
"""

from __future__ import annotations

import os

from pipelines.ingest import ingest_flow
from pipelines.runners import on_dask
from pipelines.train import train_flow

train_on_dask = on_dask(train_flow, address=os.environ.get("MEDTL_DASK_ADDRESS") or None)
ingest_on_dask = on_dask(ingest_flow, address=os.environ.get("MEDTL_DASK_ADDRESS") or None)
