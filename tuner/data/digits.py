"""scikit-learn's bundled 8x8 digits as a Dataset's train and test image sets."""

from __future__ import annotations

import numpy as np
import torch

from tuner.data.sets import ImageSet
from tuner.data.splits import hold_out


def decode_digits() -> tuple[ImageSet, ImageSet]:
    """(train, test): the 1,797 digits, 20% held out as the test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 images with values 0..16, stored as uint8 0..255 like every other dataset.
    images = torch.from_numpy(np.round(digits.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    return hold_out(ImageSet(images, labels))
