"""Shared test configuration."""

from __future__ import annotations

import os

from hypothesis import settings

# Property tests drive Twisted code through a fake clock; their run time depends
# on the machine, so the "ci" profile (the default) has no per-example deadline.
settings.register_profile("ci", deadline=None)
# scripts/fuzz.sh: the fuzz targets (tests/fuzz) fed FUZZ_EXAMPLES inputs each.
settings.register_profile(
    "fuzz", deadline=None, max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200000"))
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
