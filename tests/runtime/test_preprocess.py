import numpy as np
import pytest
import torch
from PIL import Image

from rlrc_runtime.config import DINOV2_MEAN, DINOV2_STD, SIGLIP_MEAN, SIGLIP_STD
from rlrc_runtime.errors import InputError
from rlrc_runtime.preprocess import ImageTransform


def official_like(image: np.ndarray, size: int) -> torch.Tensor:
    """torchvision's PIL path written out: PIL bicubic resize -> to_tensor -> normalize per tower."""
    pil = Image.fromarray(image).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.array(pil, copy=True)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    dino = (x - torch.tensor(DINOV2_MEAN)[:, None, None]) / torch.tensor(DINOV2_STD)[:, None, None]
    sig = (x - torch.tensor(SIGLIP_MEAN)[:, None, None]) / torch.tensor(SIGLIP_STD)[:, None, None]
    return torch.cat([dino, sig])[None]


FUSED = ImageTransform(224, (DINOV2_MEAN, SIGLIP_MEAN), (DINOV2_STD, SIGLIP_STD))


@pytest.mark.parametrize("shape", [(480, 640), (224, 224), (100, 300), (720, 1280), (17, 5)])
def test_matches_pil_and_torchvision_path_bit_for_bit(shape):
    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    out = FUSED(image)
    assert out.shape == (1, 6, 224, 224) and out.dtype == np.float32
    np.testing.assert_array_equal(out, official_like(image, 224).numpy())


def test_resize_is_antialiased_bicubic():
    # A 1-pixel checkerboard averages to grey when downsampled with antialiasing;
    # nearest/non-antialiased resampling would keep extreme values.
    board = (np.indices((448, 448)).sum(0) % 2 * 255).astype(np.uint8)
    image = np.repeat(board[:, :, None], 3, axis=2)
    small = FUSED.resize(image)
    assert abs(float(small.mean()) - 127.5) < 2 and small.std() < 5
    np.testing.assert_array_equal(small, np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC)))


def test_single_tower_channels():
    t = ImageTransform(112, (SIGLIP_MEAN,), (SIGLIP_STD,))
    out = t(np.full((50, 60, 3), 255, np.uint8))
    assert out.shape == (1, 3, 112, 112)
    np.testing.assert_allclose(out, 1.0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((10, 10, 3), np.float32), "dtype"),
        (np.zeros((10, 10), np.uint8), "shape"),
        (np.zeros((10, 10, 4), np.uint8), "shape"),
        (np.zeros((0, 10, 3), np.uint8), "height and width"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_bad_images_rejected(bad, match):
    with pytest.raises(InputError, match=match):
        FUSED(bad)


def test_normalisation_comes_from_tvf_params_like_the_official_processor(ckpt_copy):
    # openvla-7b's preprocessor_config.json: timm's values in `means`, bf16-rounded ones in
    # `tvf_normalize_params` -- and the official processor applies the latter.
    import json

    from rlrc_runtime.checkpoint import image_stats, read_config

    ckpt = ckpt_copy()
    pp = json.loads((ckpt / "preprocessor_config.json").read_text())
    pp["means"] = [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]]
    pp["stds"] = [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]]
    (ckpt / "preprocessor_config.json").write_text(json.dumps(pp))
    means, stds = image_stats(ckpt, read_config(ckpt))
    assert means[0] == DINOV2_MEAN and stds[0] == DINOV2_STD
    del pp["tvf_normalize_params"]
    (ckpt / "preprocessor_config.json").write_text(json.dumps(pp))
    means, _ = image_stats(ckpt, read_config(ckpt))
    assert means[0] == (0.485, 0.456, 0.406)
