"""What every medtl flow shares: which failures are worth a retry, and PHI-free UI artifacts."""

from __future__ import annotations

from collections.abc import Mapping

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from medtl.errors import MedTLError


def retry_on_io_only(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry transient I/O failures (network shares, busy disks, a PACS that does not answer), never a data-contract,
    leakage or other medtl error.

    A medtl error means the input or configuration is wrong: running again gives the same answer.
    """
    try:
        state.result()
    except MedTLError as error:  # except the ones that say a later try can work (a PACS that was down)
        return error.transient
    except OSError:
        return True
    except Exception:  # anything else is a bug or bad data: retrying hides it
        return False
    return False


def counts_table(counts: Mapping[str, int], *, key: str, value: str) -> list[dict[str, object]]:
    return [{key: name, value: count} for name, count in sorted(counts.items())]
