"""A batch decodes with large arrays from the heap where the environment had the allocator map each one (a Dask
worker's `MALLOC_TRIM_THRESHOLD_`), and leaves the allocator as the environment set it afterwards.

Measured by page faults, which count what the slowdown is made of: a mapped array is zero-filled page by page each
time it is made, a heap array reuses pages already touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from medtl.io.allocator import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="glibc's allocator only")

_PROBE = textwrap.dedent(
    """
    import json, resource
    import numpy as np
    from medtl.io.allocator import heap_for_arrays

    stack = np.ones((20, 64, 64), dtype=np.float32)  # 320 KiB: above glibc's fixed mapping threshold

    def faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(300):
            scaled = stack * 1.5
            (scaled - scaled.mean()).sum()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults()  # first use: numpy's own set-up
    plain = faults()
    with heap_for_arrays():
        with heap_for_arrays():  # a task inside another (or beside it, in another thread)
            pass
        inside = faults()  # the inner block's end did not restore the settings: the outer one is still running
    after = faults()
    from medtl.io.allocator import heap_for_arrays_from_now
    heap_for_arrays_from_now()  # a process medtl started for its own work: for the rest of its life
    for_life = faults()
    print(json.dumps({"plain": plain, "inside": inside, "after": after, "for_life": for_life}))
    """
)


def _faults(environment: dict[str, str]) -> dict[str, int]:
    done = subprocess.run(  # this interpreter, a fixed script
        [sys.executable, "-c", _PROBE], env=environment, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_tuned_allocator_serves_a_batch_from_the_heap_and_is_restored_after_it():
    tuned = _faults({**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"})
    # 300 rounds of two 320 KiB temporaries: ~80 faults each when mapped one by one, almost none from the heap
    assert tuned["plain"] > 20_000
    assert tuned["inside"] < tuned["plain"] / 20
    assert tuned["after"] > tuned["plain"] / 2  # the environment's setting is back once the batch is done
    assert tuned["for_life"] < tuned["plain"] / 20


def test_an_untuned_allocator_is_left_alone():
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    untuned = _faults(environment)
    assert untuned["plain"] < 2_000  # glibc's own threshold adjustment already keeps these arrays on the heap
    assert untuned["inside"] < 2_000
    assert untuned["for_life"] < 2_000
