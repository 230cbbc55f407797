"""A Dask worker plugin that makes decoding one patient's series kill its worker process, as a crash inside a C
decoder does. A plugin, not a patch in the test: Dask workers are spawned (nothing the test patches reaches them),
and a nanny restarts a killed worker, which must crash again on the same series."""

from __future__ import annotations

from distributed import WorkerPlugin

from support.hostile_files import crashing_on_patient


class CrashOnPatient(WorkerPlugin):
    name = "medtl-test-crash-on-patient"

    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id

    def setup(self, worker: object) -> None:
        from medtl.ingest import worker as worker_module

        worker_module.read_plan = crashing_on_patient(worker_module.read_plan, self.patient_id)
