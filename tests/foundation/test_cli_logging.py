"""The `medtl` command's logging at its default level: medtl's own lines, and no value quoted by the DICOM libraries
(pydicom and highdicom quote header values and UIDs in their warnings and INFO lines)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EMIT = """
import logging, sys
from medtl.cli import app
app(sys.argv[1:] + ["version"], standalone_mode=False)
from pydicom import config
from pydicom.valuerep import validate_value
validate_value("DA", "QWX19460204", config.WARN)  # as pydicom does when it reads a malformed date
logging.getLogger("highdicom.base").info('copy Patient-related attributes from dataset "1.2.QWXUID"')
logging.getLogger("highdicom.base").warning('value of argument "patient_name" is potentially invalid: "QWXNAME"')
logging.getLogger("pydicom").error("an error from pydicom is still shown: QWXERROR")
logging.getLogger("medtl.scoring").info("medtl speaks: QWXMEDTL")
"""


def _run(*options: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", EMIT, *options], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def test_default_level_shows_medtl_but_no_value_the_dicom_libraries_quote_and_verbose_shows_all():
    said = _run()
    assert "QWXMEDTL" in said and "QWXERROR" in said
    assert [marker for marker in ("QWX19460204", "QWXUID", "QWXNAME") if marker in said] == []
    verbose = _run("--verbose")  # a developer's machine, on purpose
    assert all(marker in verbose for marker in ("QWX19460204", "QWXUID", "QWXNAME", "QWXMEDTL"))
