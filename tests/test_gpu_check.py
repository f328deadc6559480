"""bench/gpu_check.sh: valid bash, and a clear refusal on a machine without CUDA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.sh"


def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: run the script")
def test_without_cuda_it_exits_non_zero_saying_why() -> None:
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert (
        "gpu_check: no CUDA device" in result.stderr
        and "needs a machine with an NVIDIA GPU" in result.stderr
    )
    assert result.stdout == ""
