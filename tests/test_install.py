"""What the README's install routes rely on in pyproject.toml, and the README itself."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(line).name: Requirement(line) for line in project["dependencies"]}


def test_cpu_wheels_satisfy_the_torch_pins() -> None:
    """The CPU-only route: PyTorch's CPU wheels, installed first, are kept by `pip install -e .`."""
    pins = requirements()
    for name, cpu_build in (("torch", "2.14.1+cpu"), ("torchvision", "0.29.1+cpu")):
        assert pins[name].specifier.contains(cpu_build), f"{name} {cpu_build} would be replaced"


def test_torch_and_torchvision_are_pinned_together() -> None:
    """A torchvision from another release does not import next to the pinned torch."""
    pins = requirements()
    for name in ("torch", "torchvision"):
        (spec,) = pins[name].specifier
        assert spec.operator == "==", f"{name} must be pinned exactly"


def test_readme_says_each_sentence_once() -> None:
    """A paragraph copied into a second section drifts from the first (it happened twice)."""
    text = " ".join((ROOT / "README.md").read_text().split())
    sentences = [s for s in re.split(r"(?<=[.:])\s+", text) if len(s) > 40 and "|" not in s]
    assert not {s for s in sentences if sentences.count(s) > 1}
