"""The C kernel of the batched augmentation (augment/native.py) against the torch ops it replaces.

The torch ops are the reference (tests/test_augment.py checks them against torchvision): for the
same drawn parameters the kernel must give their views to float rounding, for every recipe,
channel count and source size, and fall back to them, saying why, where it cannot be built.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from simsiam.augment import BatchAugment, native
from simsiam.augment import batched as B
from simsiam.config import AugConfig

pytestmark = pytest.mark.skipif(native.unavailable_reason() is not None,
                                reason=f"no native kernel here: {native.unavailable_reason()}")


def photos(n: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth colour blobs with fine noise, plus the hue's hard cases: grey pixels and tied channels."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 5, 5, generator=g)
    img = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    img = (img + 0.15 * torch.rand(n, channels, height, width, generator=g)).clamp(0, 1)
    if channels == 3:
        img[0, :, :3, :] = 0.5  # grey
        img[1, 1, :, :4] = img[1, 0, :, :4]  # red == green
        img[2, 2, :3, :] = img[2, 1, :3, :]  # green == blue
    return (img * 255).round().to(torch.uint8)


def both(aug_cfg: AugConfig, size: int, images: torch.Tensor, seed: int, mean=None, std=None):
    """The kernel's and the torch ops' views of ``images`` for the same drawn parameters."""
    channels = images.shape[1]
    mean = mean or (0.0,) * channels
    std = std or (1.0,) * channels
    native_aug = BatchAugment(aug_cfg, size, channels, mean, std, kernel="native")
    torch_aug = BatchAugment(aug_cfg, size, channels, mean, std, kernel="torch")
    params = native_aug.sample_params(len(images), torch.Generator().manual_seed(seed), "cpu",
                                      image_hw=tuple(images.shape[-2:]))
    return native_aug.apply(images, params), torch_aug.apply(images, params), params


# Upscaled, same size, downscaled, non-square, and a source beyond the torch ops' matmul crop.
@pytest.mark.parametrize("source_hw,size", [((20, 20), 32), ((64, 64), 64), ((80, 72), 32), ((37, 61), 24),
                                            ((B._MATMUL_CROP_MAX_SIDE + 12, 90), 40)])
@pytest.mark.parametrize("recipe,channels", [("cifar", 3), ("imagenet", 3), ("gray", 1), ("cifar", 1)])
def test_kernel_gives_the_torch_ops_views(source_hw, size, recipe, channels):
    images = photos(24, channels, *source_hw, seed=size)
    ours, ref, params = both(AugConfig(recipe=recipe, jitter_p=0.9, hue=0.5 if channels == 3 else 0.0), size,
                             images, seed=3, mean=(0.4,) * channels, std=(0.2,) * channels)
    assert ours.shape == ref.shape == (24, channels, size, size) and ours.dtype == torch.float32
    assert params["flip"].any() and params["jitter"].any()
    if recipe == "imagenet":
        assert params["blur"].any()  # the blur follows the kernel as torch ops
    assert (ours - ref).abs().max() * 0.2 < 1e-5  # in units of the [0, 1] image (std 0.2)


def whole_photos(uprights: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Upright (C, h, w) images packed as the cache of whole photos packs them: landscape in a
    (C, short, long) slot, portraits transposed, the last column repeated to the edge; and their sizes."""
    short = min(uprights[0].shape[1:])
    long = max(max(img.shape[1:]) for img in uprights)
    slots = torch.empty(len(uprights), uprights[0].shape[0], short, long, dtype=torch.uint8)
    for slot, img in zip(slots, uprights):
        stored = img.transpose(1, 2) if img.shape[1] > img.shape[2] else img
        slot[:, :, :stored.shape[2]] = stored
        slot[:, :, stored.shape[2]:] = stored[:, :, -1:]
    return slots, torch.tensor([img.shape[1:] for img in uprights])


# Upscaled and downscaled views of 4:3 and 3:4 photos among squares and a 5:4 one; and slots beyond
# the torch ops' matmul crop (their grid_sample path).
@pytest.mark.parametrize("short,size", [(24, 40), (36, 16), (B._MATMUL_CROP_MAX_SIDE - 20, 48)])
@pytest.mark.parametrize("recipe,channels", [("imagenet", 3), ("gray", 1)])
def test_kernel_gives_the_torch_ops_views_of_whole_photos(short, size, recipe, channels):
    """Rectangles: for the same drawn parameters the kernel's views equal the torch ops', and both
    equal the torch ops' views of each upright photo cropped on its own (the transposition of
    portraits undone exactly)."""
    long = short * 4 // 3
    shapes = [(short, long), (long, short), (short, short), (short, short * 5 // 4)] * 4
    uprights = [photos(3, channels, h, w, seed=k)[k % 3] for k, (h, w) in enumerate(shapes)]
    slots, sizes = whole_photos(uprights)
    cfg = AugConfig(recipe=recipe, jitter_p=0.9, hue=0.5 if channels == 3 else 0.0)
    mean, std = (0.4,) * channels, (0.2,) * channels
    native_aug = BatchAugment(cfg, size, channels, mean, std, kernel="native")
    torch_aug = BatchAugment(cfg, size, channels, mean, std, kernel="torch")
    params = native_aug.sample_params(len(slots), torch.Generator().manual_seed(size), "cpu", image_sizes=sizes)
    assert (params["flip"] & params["transposed"]).any() and (params["flip"] & ~params["transposed"]).any()
    ours, ref = native_aug.apply(slots, params), torch_aug.apply(slots, params)
    assert (ours - ref).abs().max() * 0.2 < 1e-5
    for i, img in enumerate(uprights):
        one = {k: v[i:i + 1] for k, v in params.items() if k != "transposed"}
        alone = torch_aug.apply(img.unsqueeze(0).contiguous(), one)[0]
        assert (alone - ref[i]).abs().max() * 0.2 < 1e-5, i


@pytest.mark.parametrize("name,extremes", [
    ("brightness", (0.0, 2.0)), ("contrast", (0.0, 2.0)), ("saturation", (0.0, 2.0)), ("hue", (-0.5, 0.5)),
])
def test_each_jitter_op_at_its_extremes(name, extremes):
    """Every image jittered by one op at a factor from the ends of (or beyond) the recipes' ranges, where the
    clamps act."""
    images = photos(16, 3, 24, 24, seed=9)
    aug_cfg = AugConfig(recipe="cifar", jitter_p=1.0, grayscale_p=0.0)
    native_aug = BatchAugment(aug_cfg, 24, 3, (0.0,) * 3, (1.0,) * 3, kernel="native")
    torch_aug = BatchAugment(aug_cfg, 24, 3, (0.0,) * 3, (1.0,) * 3, kernel="torch")
    params = native_aug.sample_params(16, torch.Generator().manual_seed(0), "cpu", image_hw=(24, 24))
    neutral = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
    for key, value in neutral.items():
        params[key] = torch.full((16,), value)
    params[name] = torch.linspace(*extremes, 16)
    ours, ref = native_aug.apply(images, params), torch_aug.apply(images, params)
    assert (ours - ref).abs().max() < 2e-5
    assert not torch.allclose(ours, native_aug.apply(images, {**params, name: torch.full((16,), neutral[name])}))


def test_views_do_not_depend_on_the_thread_count():
    images = photos(13, 3, 32, 32, seed=1)
    aug = BatchAugment(AugConfig(recipe="cifar"), 32, 3, (0.5,) * 3, (0.25,) * 3, kernel="native")
    params = aug.sample_params(13, torch.Generator().manual_seed(5), "cpu", image_hw=(32, 32))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = aug.apply(images, params)
        torch.set_num_threads(5)  # more threads than cores, and shares of uneven size
        five = aug.apply(images, params)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, five)


def test_non_contiguous_batches_are_read_correctly():
    images = photos(8, 3, 32, 32, seed=2)
    strided = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels-last memory
    aug = BatchAugment(AugConfig(recipe="cifar"), 24, 3, (0.0,) * 3, (1.0,) * 3, kernel="native")
    params = aug.sample_params(8, torch.Generator().manual_seed(0), "cpu", image_hw=(32, 32))
    assert torch.equal(aug.apply(strided, params), aug.apply(images, params))


def test_library_is_built_once_per_source_compiler_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE_DIR", str(tmp_path))
    compiler = native._compiler()
    first = native._build(compiler, native.library_dir())
    assert first.parent == tmp_path / "native" and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert native._build(compiler, native.library_dir()) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left behind


def test_a_library_built_with_any_flag_set_is_used_without_compiling_again(tmp_path, failing_compiler):
    """Where the first flag sets failed once (no OpenMP), later processes go straight to what was built."""
    compiler = native._compiler()
    fallback = native.library_dir() / native._library_name(native.SOURCE.read_bytes(), compiler,
                                                           native.FLAG_SETS[-1])
    fallback.parent.mkdir(parents=True)
    fallback.write_bytes(b"")
    assert native._build(compiler, native.library_dir()) == fallback  # the failing compiler never ran


def test_no_compiler_keeps_the_torch_ops_and_says_why(monkeypatch, fresh_native_kernel):
    monkeypatch.setattr(native, "_compiler", lambda: None)
    auto = BatchAugment(AugConfig(recipe="cifar"), 16, 3, (0.5,) * 3, (0.25,) * 3)
    assert not auto.uses_native("cpu")
    assert "no C compiler found" in auto.describe("cpu") and "torch ops" in auto.describe("cpu")
    images = photos(4, 3, 16, 16)
    assert auto(images, torch.Generator().manual_seed(0)).shape == (4, 3, 16, 16)
    insisted = BatchAugment(AugConfig(recipe="cifar"), 16, 3, (0.5,) * 3, (0.25,) * 3, kernel="native")
    with pytest.raises(native.NativeUnavailable, match="data.augment_kernel=torch"):
        insisted(images)


def test_a_compiler_that_fails_is_reported(tmp_path, failing_compiler):
    why = native.unavailable_reason()
    assert why is not None and failing_compiler in why
    assert not list((tmp_path / "cache" / "native").iterdir())  # no half-written library


def test_a_cache_directory_that_cannot_be_made_is_reported(tmp_path, monkeypatch, fresh_native_kernel):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("SIMSIAM_CACHE_DIR", str(blocker))
    why = native.unavailable_reason()
    assert why is not None and str(blocker) in why
    assert "torch ops" in BatchAugment(AugConfig(recipe="gray"), 8, 1, (0.5,), (0.5,)).describe("cpu")


def test_cuda_batches_never_use_the_kernel():
    aug = BatchAugment(AugConfig(recipe="cifar"), 16, 3, (0.5,) * 3, (0.25,) * 3, kernel="native")
    assert aug.uses_native("cpu") and not aug.uses_native("cuda")
    assert "native C kernel" in aug.describe("cpu") and aug.describe("cuda") == "augmentation by torch ops"


def test_kernel_stays_inside_its_buffers_under_sanitizers(tmp_path):
    """The kernel and a C driver built with AddressSanitizer and UBSan, run outside Python (torch's
    own libraries do not run under ASan)."""
    harness = Path(__file__).with_name("native_augment_harness.c")
    exe = tmp_path / "harness"
    built = subprocess.run([native._compiler(), "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                            "-fopenmp", "-std=c99", str(harness), str(native.SOURCE), "-o", str(exe), "-lm"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"this compiler cannot build with the sanitizers: {built.stderr.strip()[-200:]}")
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                         env={"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1"})
    assert ran.returncode == 0 and ran.stdout.strip() == "ok", ran.stderr[-2000:]
