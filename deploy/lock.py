"""Pins for the worker image: tuner's installed runtime dependencies, as `name==version` lines.

    python deploy/lock.py > deploy/constraints.txt    # after changing a dependency

Walks the requirements of the installed `tuner` (with the `dashboard` extra) through
importlib.metadata, so the pins are the versions the tests ran against on this machine.
torch's CUDA-only wheels are left out: the image takes torch from the index named by its
TORCH_INDEX build argument, which brings its own.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.markers import default_environment
from packaging.requirements import Requirement

EXTRAS = ("dashboard",)
GPU_ONLY = re.compile(r"^(nvidia-|cuda-|triton$)")
HEADER = """\
# Exact versions the worker image installs (Dockerfile: pip install -c deploy/constraints.txt),
# so workers built on different days run one Optuna version against one storage schema.
# Resolved from tuner's runtime dependencies plus the `dashboard` extra; torch's CUDA-only
# wheels are left out because the image takes torch from the index named by TORCH_INDEX.
# Regenerate after changing a dependency: python deploy/lock.py > deploy/constraints.txt
"""


def canonical(name: str) -> str:
    """PEP 503 normalised project name (`Typing_Extensions` -> `typing-extensions`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(root: str = "tuner", extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """Installed version of every distribution `root[extras]` needs, by canonical name."""
    versions: dict[str, str] = {}
    pending = [(root, extras)]
    while pending:
        name, wanted_extras = pending.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # a marker-selected optional dependency that is not installed
        key = canonical(name)
        if key in versions and not wanted_extras:
            continue
        versions[key] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if _applies(requirement, wanted_extras):
                pending.append((requirement.name, tuple(requirement.extras)))
    versions.pop(canonical(root), None)
    return {name: version for name, version in versions.items() if not GPU_ONLY.match(name)}


def _applies(requirement: Requirement, extras: tuple[str, ...]) -> bool:
    if requirement.marker is None:
        return True
    environment = default_environment()
    return any(
        requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras)
    )


def main() -> None:
    pins = runtime_closure()
    sys.stdout.write(HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins)))


if __name__ == "__main__":
    main()
