"""The report fixture: a realistic, pseudonymous ReportInput (built in report_support.py)."""

from __future__ import annotations

import pytest
from report_support import build_report

from medtl.reporting.model import ReportInput


@pytest.fixture
def report() -> ReportInput:
    return build_report()
