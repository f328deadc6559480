"""Which known dataset IDX files hold: published checksums, else a pixel-statistics fingerprint.

MNIST and Fashion-MNIST share one file format, file names and image size, so a folder of the
one passes for the other and a study would train on digits under the clothing name. The
published files are known by their MD5s; subsets (such as ../shared/datasets/mnist-10k) are
known by two statistics that differ strongly between the two and hold for any few hundred
images: the mean pixel value and the fraction of pixels that are exactly zero.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.data.idx import IdxFile

log = logging.getLogger(__name__)

# How far a subset's statistics may stray from the dataset's own: random subsets of 100
# images stay within +-0.04 (mean) and +-0.05 (zero fraction) of MNIST's and Fashion-MNIST's.
MEAN_TOLERANCE = 0.06
ZERO_TOLERANCE = 0.10
MIN_IMAGES = 100  # fewer images say too little to tell datasets apart


@dataclass(frozen=True)
class Signature:
    """What a known dataset's IDX files look like."""

    title: str  # for messages: "MNIST digits"
    image_shape: tuple[int, int]
    pixel_mean: float  # on the 0..1 scale, over all images
    zero_fraction: float  # of all pixels
    published_md5: Mapping[str, str]  # MD5 of a published file (or its contents) -> file name

    def matches(self, pixel_mean: float, zero_fraction: float) -> bool:
        return (
            abs(pixel_mean - self.pixel_mean) <= MEAN_TOLERANCE
            and abs(zero_fraction - self.zero_fraction) <= ZERO_TOLERANCE
        )


def pixel_statistics(images: np.ndarray) -> tuple[float, float]:
    """(mean pixel value on the 0..1 scale, fraction of zero pixels) of uint8 images."""
    size = max(1, images.size)
    mean = float(images.sum(dtype=np.uint64)) / size / 255
    return mean, 1 - np.count_nonzero(images) / size


def check_idx_identity(
    name: str, files: Sequence[IdxFile], signatures: Mapping[str, Signature]
) -> None:
    """Raise TunerError when `files`, read for dataset `name`, hold another known dataset.

    A file with a published MD5 of another dataset is refused; one of `name`'s own is
    accepted as it is. Every other images file whose pixel statistics match another dataset's
    signature and not `name`'s is refused; files that match none (a dataset of your own in
    the same format) pass.
    """
    own = signatures.get(name)
    if own is None:
        return
    published_own: set[str] = set()
    for file in files:
        for md5 in sorted(file.md5s):
            for other, signature in signatures.items():
                published = signature.published_md5.get(md5)
                if published is None:
                    continue
                if other != name:
                    raise TunerError(
                        f"{file.path}: this file is the published {signature.title} "
                        f"{published} (MD5 {md5}), not {own.title}; pass the folder that holds "
                        f"{own.title} as --data-dir, or use dataset {other!r}"
                    )
                published_own.add(str(file.path))
    for file in files:
        images = file.array
        if str(file.path) in published_own or images.ndim != 3 or len(images) < MIN_IMAGES:
            continue
        if tuple(images.shape[1:]) != own.image_shape:
            continue
        mean, zeros = pixel_statistics(images)
        log.debug("%s: pixel mean %.3f, %.1f%% zero pixels", file.path, mean, 100 * zeros)
        if own.matches(mean, zeros):
            continue
        for other, signature in signatures.items():
            if other != name and signature.matches(mean, zeros):
                raise TunerError(
                    f"{file.path}: these images look like {signature.title}, not {own.title} "
                    f"(pixel mean {mean:.2f}, {zeros:.0%} zero pixels; {own.title} has about "
                    f"{own.pixel_mean:.2f} and {own.zero_fraction:.0%}); pass the folder that "
                    f"holds {own.title} as --data-dir, or use dataset {other!r}"
                )
