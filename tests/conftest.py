"""Shared fixtures. Lab fixtures live in tests/lab/conftest.py.

Tests never reach public services: the probe's public defaults (DoH resolvers, OONI's test
helpers) are turned off for the whole suite and every process it starts, through the
environment. A test that wants to see the defaults reads them (probe.controls), never uses them.
"""

import os

os.environ["PROBE_NO_THIRD_PARTY"] = "1"
