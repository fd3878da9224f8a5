import os

import pytest

# Small by default; HTCDS_FAULTS_FULL=1 for the full size (thousands of cases, many pages).
FULL = os.environ.get("HTCDS_FAULTS_FULL") == "1"
SIZE = {"cases": 2000, "page_size": 100} if FULL else {"cases": 60, "page_size": 10}


@pytest.fixture
def size() -> dict:
    return dict(SIZE)
