"""`htcds-connector` with the tests' scripted source registered: `python -m tests.faults.cli run JOB`."""

import sys

import tests.faults.jobs  # noqa: F401 - registers the `scripted` source
from connector.cli import main

if __name__ == "__main__":
    sys.exit(main())
