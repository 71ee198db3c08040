"""Shared pytest set-up: hypothesis profiles (CI runs fewer, deterministic examples)."""

import os
import sys

from hypothesis import HealthCheck, settings

# shared helpers (tests/axmoe_testing.py) import as a plain module
sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile("default", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=40, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")
