"""Batched, on-device augmentation of training batches.

Every op draws one random parameter per sample and transforms the whole batch with a few
tensor ops (airbench style): no Python loop over samples and no host syncs, so it runs on
CPU and CUDA alike and the output keeps the input's memory format.

Images arrive normalised (per-channel mean 0, std 1 over the dataset), which decides two things:
- Fill values: crop padding and the borders uncovered by rotation/translation are black, as
  torchvision's RandomCrop(padding, fill=0) and RandomAffine(fill=0) fill raw images; black's
  normalised value (-mean/std per channel) comes in as `black`. Cutout squares are 0, the
  dataset's mean colour, as in the Cutout paper, which erases normalised images.
- Colour jitter works in normalised units (see `_color_jitter`) and does not clamp, because
  the raw [0, 1] range is unknown here.

torchvision's v2.RandomCrop / RandomHorizontalFlip / RandomAffine draw one set of parameters for
a whole batched tensor, and v2.MixUp / v2.CutMix take no generator and share one lambda and box
across the batch; hence the few tensor ops below instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from tuner.config import AugmentSpec


def augment_batch(
    images: Tensor,
    labels: Tensor,
    spec: AugmentSpec,
    num_classes: int,
    generator: torch.Generator | None = None,
    black: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Augment a normalised batch `images` (N, C, H, W) with labels (N,) int64.

    Applies, in order: random crop with padding, horizontal flip, rotation + translation,
    colour jitter, cutout, then MixUp or CutMix (one of the two per batch, 50/50, when both are
    on). Returns (images, targets): images keep shape, dtype, device and memory format; targets
    are `labels` unchanged unless `spec.mixes_labels`, in which case they are float32 soft
    targets (N, num_classes) for `F.cross_entropy`. Random numbers come from `generator` (its
    device may differ from the images'); None uses PyTorch's global generator.
    `black` is what a black (0) pixel becomes after normalisation, per channel, (C,) or
    (1, C, 1, 1) on the images' device: -mean/std. Crop padding and the borders that rotation
    and translation uncover are filled with it; None fills them with 0, the dataset's mean
    colour. Cutout squares are 0 either way. A disabled spec returns the inputs themselves.
    """
    if not spec.enabled:
        return images, labels
    n, _, height, width = images.shape
    rnd = _Random(generator, images.device)
    out = images

    if spec.random_crop_padding > 0:
        pad = spec.random_crop_padding
        top, left = rnd.integers(n, 2 * pad + 1), rnd.integers(n, 2 * pad + 1)
        out = _crop(_pad(out, pad, black), top, left, height, width)
    if spec.horizontal_flip:
        out = _flip(out, rnd.uniform(n, 0.0, 1.0) < 0.5)
    if spec.rotation_degrees > 0 or spec.translate > 0:
        angles = rnd.uniform(n, -spec.rotation_degrees, spec.rotation_degrees)
        shift_x = rnd.uniform(n, -spec.translate, spec.translate) * width
        shift_y = rnd.uniform(n, -spec.translate, spec.translate) * height
        out = _affine(out, angles, torch.stack([shift_x, shift_y], dim=1), black)
    if spec.color_jitter > 0:
        low, high = 1.0 - spec.color_jitter, 1.0 + spec.color_jitter
        brightness, contrast, saturation = (rnd.uniform(n, low, high) for _ in range(3))
        out = _color_jitter(out, brightness, contrast, saturation)
    if spec.cutout > 0:
        side = min(spec.cutout, height, width)
        top, left = rnd.integers(n, height - side + 1), rnd.integers(n, width - side + 1)
        out = out.masked_fill(_box_mask(top, top + side, left, left + side, height, width), 0.0)

    targets = labels
    if spec.mixes_labels:
        out, targets = _mix(out, labels, spec, num_classes, rnd)
    return out.contiguous(memory_format=_memory_format(images)), targets


@dataclass(frozen=True)
class _Random:
    """Per-sample random draws from one generator, delivered on the images' device.

    Draws happen on the generator's device (a CUDA generator cannot fill CPU tensors and vice
    versa) and are then moved: a no-op when the generator lives on the images' device, a few
    small host-to-device copies when a CPU generator feeds CUDA images.
    """

    generator: torch.Generator | None
    device: torch.device

    @property
    def _draw_device(self) -> torch.device:
        return self.generator.device if self.generator is not None else self.device

    def uniform(self, n: int, low: float, high: float) -> Tensor:
        """n float32 values uniform in [low, high)."""
        u = torch.rand(n, generator=self.generator, device=self._draw_device)
        return (u * (high - low) + low).to(self.device)

    def integers(self, n: int, high: int) -> Tensor:
        """n int64 values uniform in [0, high)."""
        values = torch.randint(high, (n,), generator=self.generator, device=self._draw_device)
        return values.to(self.device)

    def permutation(self, n: int) -> Tensor:
        """A random permutation of range(n)."""
        return torch.randperm(n, generator=self.generator, device=self._draw_device).to(self.device)

    def beta(self, n: int, alpha: float) -> Tensor:
        """n float32 values from Beta(alpha, alpha)."""
        # float64 keeps small-alpha gamma draws (inside Beta) from underflowing to 0/0.
        concentration = torch.full((n,), alpha, dtype=torch.float64, device=self._draw_device)
        beta = torch.distributions.Beta(concentration, concentration)
        if self.generator is None:
            return beta.sample().float().to(self.device)
        with _global_rng_drawing_from(self.generator):
            return beta.sample().float().to(self.device)


@contextmanager
def _global_rng_drawing_from(generator: torch.Generator) -> Iterator[None]:
    """Let code that samples from the global RNG (torch.distributions takes no generator) draw
    from `generator` instead: the global RNG of its device runs on a copy of `generator`'s
    state, `generator` then takes the advanced state, and the global RNG gets its own back.

    Draws are those `generator` itself would make, no host sync is needed (a CUDA generator's
    state lives on the host), and the caller's global RNG stream is left untouched.
    """
    device = generator.device
    if device.type == "cuda":
        get_state = partial(torch.cuda.get_rng_state, device)
        set_state = partial(torch.cuda.set_rng_state, device=device)
    else:
        get_state, set_state = torch.get_rng_state, torch.set_rng_state
    saved = get_state()
    set_state(generator.get_state())
    try:
        yield
    finally:
        generator.set_state(get_state())
        set_state(saved)


def _pad(images: Tensor, pad: int, fill: Tensor | None) -> Tensor:
    """`images` inside a border `pad` pixels wide of the per-channel colour `fill` (None: 0)."""
    if fill is None:
        return F.pad(images, (pad, pad, pad, pad))
    n, channels, height, width = images.shape
    padded = torch.empty(
        (n, channels, height + 2 * pad, width + 2 * pad),
        dtype=images.dtype,
        device=images.device,
        memory_format=_memory_format(images),
    )
    # F.pad takes one scalar for all channels; a per-channel colour is filled in, then covered.
    padded.copy_(fill.reshape(1, channels, 1, 1))
    padded[:, :, pad : pad + height, pad : pad + width] = images
    return padded


def _crop(padded: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """Cut a (height, width) window at per-sample offsets (top, left) out of `padded`."""
    # Every window of `padded` as a view, (N, C, offsets_y, offsets_x, H, W): nothing copied yet.
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)
    # With the offsets next to N, one advanced index picks each sample's window: (N, C, H, W).
    samples = torch.arange(padded.shape[0], device=padded.device)
    return windows.permute(0, 2, 3, 1, 4, 5)[samples, top, left]


def _flip(images: Tensor, flip: Tensor) -> Tensor:
    """Mirror left-right the samples where the bool mask `flip` (N,) is set."""
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def _affine(images: Tensor, angles: Tensor, shifts: Tensor, fill: Tensor | None = None) -> Tensor:
    """Rotate each image by `angles` (N,) degrees about its centre, then shift it by `shifts`
    (N, 2) pixels (x right, y down), with one bilinear grid_sample; uncovered pixels take the
    per-channel colour `fill` (C,) or (1, C, 1, 1), None: 0.

    Positive angles turn clockwise as displayed (x right, y down).
    """
    _, _, height, width = images.shape
    radians = torch.deg2rad(angles.to(images.dtype))
    cos, sin = radians.cos(), radians.sin()
    # affine_grid maps each output position to the input position it reads, in coordinates
    # normalised to [-1, 1] per axis: input = A (output - t). A is the inverse rotation R(-a),
    # conjugated by the per-axis scaling so that angles stay true on non-square images.
    a = torch.stack(
        [
            torch.stack([cos, sin * height / width], -1),
            torch.stack([-sin * width / height, cos], -1),
        ],
        dim=1,
    )  # (N, 2, 2)
    shifts = shifts.to(images.dtype)
    t = torch.stack([shifts[:, 0] * (2.0 / width), shifts[:, 1] * (2.0 / height)], dim=1)
    theta = torch.cat([a, -(a @ t[:, :, None])], dim=2)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # grid_sample reads 0 outside the image; shifting the colours by `fill` before sampling and
    # back after makes it read `fill` there, since bilinear weights sum to 1. torchvision's
    # affine(fill=...) blends with a sampled mask to the same effect.
    offset = 0.0 if fill is None else fill.reshape(1, -1, 1, 1).to(images.dtype)
    sampled = F.grid_sample(
        images - offset, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return sampled + offset


def _color_jitter(
    images: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor
) -> Tensor:
    """Per-sample brightness, contrast and (3 channels only) saturation factors (N,) near 1.

    Contrast blends each channel with the image's own mean of that channel; because
    normalisation is a per-channel affine map, this equals raw-pixel contrast exactly.
    Brightness would scale raw pixels around black, whose normalised value is unknown here, so
    it adds (factor - 1) dataset standard deviations instead. Saturation blends with the mean
    over channels, a grey that ignores luminance weights (they don't apply after normalising).
    """
    factor_shape = (-1, 1, 1, 1)
    mean = images.mean(dim=(2, 3), keepdim=True)
    out = torch.lerp(mean, images, contrast.view(factor_shape).to(images.dtype))
    out = out + (brightness.view(factor_shape).to(images.dtype) - 1.0)
    if images.shape[1] == 3:
        grey = out.mean(dim=1, keepdim=True)
        out = torch.lerp(grey, out, saturation.view(factor_shape).to(images.dtype))
    return out


def _box_mask(
    top: Tensor, bottom: Tensor, left: Tensor, right: Tensor, height: int, width: int
) -> Tensor:
    """Bool mask (N, 1, H, W), true inside rows [top, bottom) and columns [left, right)."""
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])  # (N, W)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _mix(
    images: Tensor, labels: Tensor, spec: AugmentSpec, num_classes: int, rnd: _Random
) -> tuple[Tensor, Tensor]:
    """MixUp or CutMix each sample with a random partner; returns images and soft targets.

    Both are "keep weight w of my own image, 1 - w of the partner's": MixUp with a constant
    w = lam per sample, CutMix with w = 0 inside a pasted box (target weight = the kept area).
    """
    n, _, height, width = images.shape
    # A random partner rather than v2's roll(1): pairs stay random even if batches are not.
    partner = rnd.permutation(n)
    choices = []  # (pixel weight (N, 1, H or 1, W or 1), target weight (N,)) per enabled method
    if spec.mixup_alpha > 0:
        lam = rnd.beta(n, spec.mixup_alpha)
        choices.append((lam.view(-1, 1, 1, 1), lam))
    if spec.cutmix_alpha > 0:
        lam = rnd.beta(n, spec.cutmix_alpha)
        # torchvision's box: side sqrt(1 - lam) of the image, centred anywhere, clipped.
        half_h = (0.5 * (1.0 - lam).sqrt() * height).long()
        half_w = (0.5 * (1.0 - lam).sqrt() * width).long()
        cy, cx = rnd.integers(n, height), rnd.integers(n, width)
        top, bottom = (cy - half_h).clamp(min=0), (cy + half_h).clamp(max=height)
        left, right = (cx - half_w).clamp(min=0), (cx + half_w).clamp(max=width)
        pasted = _box_mask(top, bottom, left, right, height, width)
        kept_area = 1.0 - ((bottom - top) * (right - left)).float() / (height * width)
        choices.append(((~pasted).float(), kept_area))
    pixel_weight, target_weight = choices[0]
    if len(choices) == 2:
        # One method per batch, decided on the device so that no host sync is needed.
        use_second = rnd.uniform(1, 0.0, 1.0) < 0.5
        pixel_weight = torch.where(use_second, choices[1][0], pixel_weight)
        target_weight = torch.where(use_second, choices[1][1], target_weight)

    mixed = torch.lerp(images[partner], images, pixel_weight.to(images.dtype))
    one_hot = F.one_hot(labels, num_classes).float()
    targets = torch.lerp(one_hot[partner], one_hot, target_weight[:, None])
    return mixed, targets


def _memory_format(images: Tensor) -> torch.memory_format:
    """channels_last when `images` is stored that way, else the default layout."""
    # Single-channel tensors count as both; either answer is then the same layout.
    if not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
