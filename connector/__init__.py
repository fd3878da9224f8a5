"""htcds-connector: pull trafficking cases from partner systems, map them to HTCDS, publish only privacy-protected releases."""

__version__ = "0.1.0"
