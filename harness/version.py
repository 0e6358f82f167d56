"""The harness's version: in every run record, and in `harness --version`."""

__version__ = "0.1.0"
