"""Shared fixtures. Lab fixtures live in tests/lab/conftest.py.

Tests never reach public services: the probe's public defaults (DoH resolvers, OONI's test
helpers) are turned off for the whole suite and every process it starts, through the
environment. A test that wants to see the defaults reads them (probe.controls), never uses them.

PROBE_STRICT=1 for the whole suite: the runner's per-target guard (which records a programming
error as an inconclusive target so one bug does not lose a run) re-raises instead, so a bug
still fails the tests loudly. The test of the guard itself unsets it.
"""

import os

os.environ["PROBE_NO_THIRD_PARTY"] = "1"
os.environ["PROBE_STRICT"] = "1"
