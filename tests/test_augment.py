"""Behaviour of the batched augmentations: what each op does to a batch, per sample."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from tuner.config import AugmentSpec
from tuner.engine.augment import _affine, _flip, _Random, augment_batch

EVERYTHING = AugmentSpec(
    random_crop_padding=4,
    horizontal_flip=True,
    rotation_degrees=15.0,
    translate=0.1,
    color_jitter=0.4,
    cutout=4,
    mixup_alpha=0.4,
    cutmix_alpha=1.0,
)


def _batch(n: int = 16, channels: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _run(images: torch.Tensor, spec: AugmentSpec, seed: int = 0, num_classes: int | None = None):
    labels = torch.arange(len(images))
    num_classes = num_classes or len(images)
    generator = torch.Generator().manual_seed(seed)
    return augment_batch(images, labels, spec, num_classes, generator=generator)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("mixing", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_shape_dtype_device_and_layout_are_kept(
    channels: int, size: int, mixing: bool, layout: torch.memory_format
) -> None:
    spec = EVERYTHING if mixing else replace(EVERYTHING, mixup_alpha=0.0, cutmix_alpha=0.0)
    images = _batch(6, channels, size).contiguous(memory_format=layout)
    out, targets = _run(images, spec, num_classes=10)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.device == images.device and out.is_contiguous(memory_format=layout)
    assert torch.isfinite(out).all() and not torch.equal(out, images)
    if mixing:
        assert targets.shape == (6, 10) and targets.dtype == torch.float32
    else:
        assert targets.dtype == torch.int64 and torch.equal(targets, torch.arange(6))


def test_disabled_spec_returns_the_inputs_themselves() -> None:
    images, labels = _batch(), torch.arange(16)
    out, targets = augment_batch(images, labels, AugmentSpec(), 16)
    assert out is images and targets is labels


def test_same_seed_same_result_different_seed_different_result() -> None:
    images = _batch(32, 3, 16)
    first, first_targets = _run(images, EVERYTHING, seed=7)
    again, again_targets = _run(images, EVERYTHING, seed=7)
    other, _ = _run(images, EVERYTHING, seed=8)
    assert torch.equal(first, again) and torch.equal(first_targets, again_targets)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_mixing_weights_are_beta_draws_from_the_given_generator_only(alpha: float) -> None:
    # torch.distributions.Beta samples from the global RNG; MixUp/CutMix must still draw from
    # the trial's generator, reproducibly, and leave the global RNG where it was.
    torch.manual_seed(0)
    global_state = torch.get_rng_state()
    draws = _Random(torch.Generator().manual_seed(3), torch.device("cpu")).beta(20_000, alpha)
    again = _Random(torch.Generator().manual_seed(3), torch.device("cpu")).beta(20_000, alpha)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(draws, again) and draws.dtype == torch.float32
    assert ((draws >= 0) & (draws <= 1)).all()
    # Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)); 20,000 draws pin both closely.
    assert draws.mean().item() == pytest.approx(0.5, abs=0.01)
    assert draws.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)


def test_crop_with_padding_translates_each_sample_differently() -> None:
    n, size, pad = 64, 8, 2
    # Distinct positive values, so that the zero fill and every pixel's origin are recognisable.
    images = torch.arange(1.0, n * size * size + 1).reshape(n, 1, size, size)
    out, _ = _run(images, AugmentSpec(random_crop_padding=pad))
    padded = F.pad(images, (pad, pad, pad, pad))
    shifts = set()
    for i in range(n):
        # The shift that reproduces the output from the zero-padded original.
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + size, dx : dx + size])
        ]
        assert len(matches) == 1, f"sample {i} is not a translated copy of itself"
        shifts.add(matches[0])
    assert len(shifts) > 10  # offsets are drawn per sample, not once per batch


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_crop_padding_is_black_like_torchvision_on_the_raw_image(
    layout: torch.memory_format,
) -> None:
    n, size, pad = 32, 6, 2
    raw = torch.randint(1, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0))
    raw = raw.to(torch.uint8)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.25, 0.2, 0.3])

    def normalise(images: torch.Tensor) -> torch.Tensor:  # as tuner.engine.DeviceData does
        scale, shift = 1.0 / (255.0 * std), mean / std
        return images.float() * scale.view(1, -1, 1, 1) - shift.view(1, -1, 1, 1)

    black = normalise(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).flatten()
    assert (black <= -1).all()  # far from 0, the mean colour the padding used to have
    images = normalise(raw).contiguous(memory_format=layout)
    labels = torch.arange(n)
    generator = torch.Generator().manual_seed(0)
    spec = AugmentSpec(random_crop_padding=pad)
    out, _ = augment_batch(images, labels, spec, n, generator=generator, black=black)
    assert out.is_contiguous(memory_format=layout)

    # torchvision's RandomCrop(padding=pad, fill=0) pads the raw uint8 image with black.
    reference = normalise(v2.functional.pad(raw, [pad], fill=0))
    borders = 0
    for i in range(n):
        crops = [
            reference[i, :, dy : dy + size, dx : dx + size]
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
        ]
        assert any(torch.equal(out[i], crop) for crop in crops), f"sample {i}"
        borders += int((out[i] == black.view(3, 1, 1)).all(dim=0).sum())
    assert borders > n * size  # most samples show some border


def test_flip_mirrors_exactly_the_masked_samples() -> None:
    images = _batch(4)
    out = _flip(images, torch.tensor([True, False, False, True]))
    assert torch.equal(out[[0, 3]], images[[0, 3]].flip(-1))
    assert torch.equal(out[[1, 2]], images[[1, 2]])


def test_random_flip_mirrors_some_samples_and_keeps_the_rest() -> None:
    images = _batch(64)
    out, _ = _run(images, AugmentSpec(horizontal_flip=True))
    flipped = torch.tensor([torch.equal(o, x.flip(-1)) for o, x in zip(out, images, strict=True)])
    kept = torch.tensor([torch.equal(o, x) for o, x in zip(out, images, strict=True)])
    assert (flipped ^ kept).all()  # each sample is itself or its own mirror image
    assert 10 < int(flipped.sum()) < 54


@pytest.mark.parametrize(("size", "side"), [(8, 3), (28, 8), (32, 40)])
def test_cutout_zeroes_one_square_of_the_given_side_inside_the_image(size: int, side: int) -> None:
    images = torch.ones(32, 3, size, size)
    out, _ = _run(images, AugmentSpec(cutout=side))
    side = min(side, size)  # a square larger than the image covers all of it
    corners = set()
    for sample in out:
        zero = (sample == 0).all(dim=0)
        assert torch.equal(zero, (sample == 0).any(dim=0))  # all channels cut alike
        rows, cols = zero.nonzero(as_tuple=True)
        assert len(rows) == side * side
        assert int(rows.max() - rows.min()) + 1 == side and int(cols.max() - cols.min()) + 1 == side
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 1 or size == side


def test_affine_with_no_rotation_or_shift_is_identity() -> None:
    images = _batch(4, 3, 28)
    out = _affine(images, torch.zeros(4), torch.zeros(4, 2))
    torch.testing.assert_close(out, images)


def test_affine_rotates_about_the_centre_and_shifts_by_whole_pixels() -> None:
    images = _batch(2, 3, 8)
    turned = _affine(images, torch.tensor([90.0, -90.0]), torch.zeros(2, 2))
    torch.testing.assert_close(turned[0], images[0].rot90(-1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(turned[1], images[1].rot90(1, dims=(-2, -1)), atol=1e-5, rtol=0)

    shifted = _affine(images, torch.zeros(2), torch.tensor([[2.0, 0.0], [0.0, -3.0]]))
    torch.testing.assert_close(shifted[0, :, :, 2:], images[0, :, :, :-2])  # 2 px right
    assert (shifted[0, :, :, :2] == 0).all()
    torch.testing.assert_close(shifted[1, :, :-3], images[1, :, 3:])  # 3 px up
    assert (shifted[1, :, -3:] == 0).all()


def test_affine_keeps_angles_on_non_square_images() -> None:
    image = torch.zeros(1, 1, 6, 10)
    image[0, 0, 3, 5] = image[0, 0, 3, 7] = 1.0  # two dots 2 px apart on a row
    turned = _affine(image, torch.tensor([90.0]), torch.zeros(1, 2))
    dots = turned[0, 0].nonzero().tolist()
    assert dots == [[3, 4], [5, 4]]  # still 2 px apart, now on a column


@pytest.mark.parametrize("channels", [1, 3])
def test_rotation_fills_uncovered_corners_with_black_and_keeps_the_centre(channels: int) -> None:
    size, inner = 16, slice(4, 12)  # the centre stays covered whatever the angle
    colour = torch.tensor([0.5, -0.25, 1.5])[:channels].view(1, -1, 1, 1)
    black = torch.tensor([-2.0, -1.5, -1.0])[:channels]
    images = colour.expand(2, channels, size, size).clone()
    angles, no_shift = torch.tensor([45.0, -45.0]), torch.zeros(2, 2)
    rows, cols = [0, 0, -1, -1], [0, -1, 0, -1]

    turned = _affine(images, angles, no_shift, black)
    corners = turned[:, :, rows, cols]  # (N, C, 4): 45 degrees uncovers all four corners
    assert torch.equal(corners, black.view(1, -1, 1).expand_as(corners))
    torch.testing.assert_close(turned[:, :, inner, inner], images[:, :, inner, inner])

    zero_filled = _affine(images, angles, no_shift)  # no colour given: the mean colour, 0
    assert (zero_filled[:, :, rows, cols] == 0).all()
    torch.testing.assert_close(zero_filled[:, :, inner, inner], images[:, :, inner, inner])


def test_rotation_and_translation_fill_black_like_torchvision_on_the_raw_image() -> None:
    n, size = 4, 12
    raw = torch.randint(1, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.25, 0.2, 0.3])

    def normalise(images: torch.Tensor) -> torch.Tensor:  # as tuner.engine.DeviceData does
        scale, shift = 1.0 / (255.0 * std), mean / std
        return images.float() * scale.view(1, -1, 1, 1) - shift.view(1, -1, 1, 1)

    black = normalise(torch.zeros(1, 3, 1, 1)).flatten()
    angles = torch.tensor([30.0, -20.0, 45.0, 0.0])
    shifts = torch.tensor([[0.0, 0.0], [2.0, -1.0], [0.0, 0.0], [-3.0, 2.0]])
    out = _affine(normalise(raw), angles, shifts, black)
    for i in range(n):
        # torchvision's affine of the raw image, zero (black) outside it. fill=None: with fill=0
        # the result is the same but for partly covered edge pixels, which its mask blend
        # weights by coverage a second time.
        reference = v2.functional.affine(
            raw[i].float(),
            angle=float(angles[i]),  # clockwise, as ours
            translate=shifts[i].tolist(),
            scale=1.0,
            shear=[0.0, 0.0],
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=None,
        )
        torch.testing.assert_close(out[i], normalise(reference[None])[0], atol=1e-4, rtol=0)
    assert (out == black.view(1, 3, 1, 1)).all(dim=1).sum() > n  # black shows in the borders


@pytest.mark.parametrize("given", [True, False])
def test_augment_batch_fills_affine_borders_with_black_when_given(given: bool) -> None:
    colour = torch.tensor([0.5, -0.25, 1.5]).view(1, 3, 1, 1)
    images = colour.expand(32, 3, 16, 16).clone()
    black = torch.tensor([-2.0, -1.5, -1.0])
    spec = AugmentSpec(rotation_degrees=45.0, translate=0.25)
    generator = torch.Generator().manual_seed(0)
    out, _ = augment_batch(
        images, torch.arange(32), spec, 32, generator=generator, black=black if given else None
    )
    fill = (black if given else torch.zeros(3)).view(1, 3, 1, 1)
    filled = (out == fill).all(dim=1)  # (N, H, W)
    assert filled.any(dim=(1, 2)).float().mean() > 0.5  # most samples show some border
    # Every other pixel is the colour, or on an edge a blend of the colour and the fill.
    low, high = torch.minimum(colour, fill) - 1e-5, torch.maximum(colour, fill) + 1e-5
    assert ((out >= low) & (out <= high)).all()


def test_translate_moves_content_at_most_the_given_fraction() -> None:
    n, size, fraction = 32, 16, 0.25
    images = torch.zeros(n, 1, size, size)
    images[:, :, 8, 8] = 1.0
    out, _ = _run(images, AugmentSpec(translate=fraction))
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mass = out[:, 0].sum(dim=(1, 2))
    centre_y = (out[:, 0] * ys).sum(dim=(1, 2)) / mass
    centre_x = (out[:, 0] * xs).sum(dim=(1, 2)) / mass
    assert (centre_y - 8).abs().max() <= fraction * size
    assert (centre_x - 8).abs().max() <= fraction * size
    assert centre_x.std() > 1 and centre_y.std() > 1  # each sample moves its own way


def test_color_jitter_is_a_per_sample_contrast_and_brightness_change() -> None:
    jitter = 0.4
    images = _batch(32, 1, 8)
    out, _ = _run(images, AugmentSpec(color_jitter=jitter))
    # For one channel the op is out = slope * x + offset per sample, slope = contrast factor.
    centred = images - images.mean(dim=(1, 2, 3), keepdim=True)
    slope = (centred * out).sum(dim=(1, 2, 3)) / (centred**2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(
        out, slope.view(-1, 1, 1, 1) * centred + out.mean(dim=(1, 2, 3), keepdim=True)
    )
    assert ((slope >= 1 - jitter - 1e-5) & (slope <= 1 + jitter + 1e-5)).all()
    assert slope.std() > 0.05


def test_color_jitter_keeps_grey_images_grey_and_shifts_brightness_within_range() -> None:
    jitter = 0.3
    images = torch.full((16, 3, 8, 8), 0.5)  # grey and flat: only brightness can change it
    out, _ = _run(images, AugmentSpec(color_jitter=jitter))
    assert torch.allclose(out, out[:, :1].expand_as(out))  # channels still equal
    shift = out - images
    assert shift.abs().max() <= jitter + 1e-5 and shift.std(dim=0).max() > 0.01


def _mixed_targets_and_images(spec: AugmentSpec, seed: int = 0):
    """A batch whose label i marks image i, so targets say which images were combined."""
    images = _batch(32, 3, 8, seed=seed)
    out, targets = _run(images, spec, seed=seed)
    return images, out, targets


def _check_targets_are_pair_mixtures(targets: torch.Tensor) -> None:
    assert targets.dtype == torch.float32 and (targets >= 0).all()
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(len(targets)))
    assert ((targets > 0).sum(dim=1) <= 2).all()  # each sample mixes with one partner at most
    assert (targets.max(dim=1).values < 1).any()  # and some actually mix


def test_mixup_images_mix_with_the_target_weights() -> None:
    images, out, targets = _mixed_targets_and_images(AugmentSpec(mixup_alpha=0.4))
    _check_targets_are_pair_mixtures(targets)
    # Target row i = lam e_i + (1 - lam) e_j  <=>  image i = lam x_i + (1 - lam) x_j.
    expected = torch.einsum("nk,kchw->nchw", targets, images)
    torch.testing.assert_close(out, expected)


def test_cutmix_target_weights_equal_the_pasted_area() -> None:
    images, out, targets = _mixed_targets_and_images(AugmentSpec(cutmix_alpha=1.0))
    _check_targets_are_pair_mixtures(targets)
    area = images.shape[-1] * images.shape[-2]
    for i, (sample, weights) in enumerate(zip(out, targets, strict=True)):
        sources = [int(k) for k in weights.nonzero().flatten()]
        if sources == [i]:  # paired with itself, or an empty box: nothing changed
            assert torch.equal(sample, images[i])
            continue
        partner = next(k for k in sources if k != i)
        pasted = (sample == images[partner]).all(dim=0)
        kept = (sample == images[i]).all(dim=0)
        assert (pasted ^ kept).all()  # every pixel comes whole from one of the two images
        rows, cols = pasted.nonzero(as_tuple=True)
        box = (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)
        assert box == len(rows)  # the pasted pixels form one rectangle
        torch.testing.assert_close(weights[partner], torch.tensor(len(rows) / area))
        torch.testing.assert_close(weights[i], torch.tensor(1 - len(rows) / area))


def test_mixup_and_cutmix_together_pick_one_method_per_batch() -> None:
    spec = AugmentSpec(mixup_alpha=0.4, cutmix_alpha=1.0)
    methods = set()
    for seed in range(12):
        images, out, targets = _mixed_targets_and_images(spec, seed=seed)
        _check_targets_are_pair_mixtures(targets)
        # CutMix copies whole pixels from the two sources; MixUp blends them.
        mixed = out[targets.max(dim=1).values < 1]
        whole_pixels = [bool((o == images).all(dim=1).any(dim=0).all()) for o in mixed]
        assert all(whole_pixels) or not any(whole_pixels)
        methods.add(all(whole_pixels))
    assert methods == {True, False}
