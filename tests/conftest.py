"""Shared fixtures. Lab fixtures live in tests/lab/conftest.py.

PROBE_STRICT=1 for the whole suite: the runner's per-target guard (which records a programming
error as an inconclusive target so one bug does not lose a run) re-raises instead, so a bug
still fails the tests loudly. The test of the guard itself unsets it.
"""

import os

os.environ["PROBE_STRICT"] = "1"
