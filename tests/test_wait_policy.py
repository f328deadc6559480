"""The CLI waits passively in OpenMP unless the user chose a policy, set before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import os, sys, tuner.cli; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"


@pytest.mark.parametrize(("given", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_cli_sets_passive_waiting_before_torch_unless_given(given: str | None, seen: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [seen, "False"]  # torch not loaded yet: the setting takes effect
