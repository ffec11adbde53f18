"""AlexNet in the GPM style (Saha et al. 2021), the 5-datasets network of HALRP (specs/halrp.md).

conv 64@4 -> BN -> ReLU -> dropout 0.2 -> maxpool 2
conv 128@3 -> BN -> ReLU -> dropout 0.2 -> maxpool 2
conv 256@2 -> BN -> ReLU -> dropout 0.5 -> maxpool 2
flatten -> FC 2048 -> BN -> ReLU -> dropout 0.5 -> FC 2048 -> BN -> ReLU -> dropout 0.5
Convolutions have no padding; on 3x32x32 the flattened size is 256*2*2 = 1024.

Two backbones, one switch (a backbone name, so every method can pick it):
- ``alexnet`` [ours]: BatchNorm keeps running statistics, so evaluation is a
  function of each input alone.
- ``alexnet_batch_stats`` (the GPM/HALRP code's quirk): BatchNorm without
  running statistics (``track_running_stats=False``): it normalises with the
  statistics of whatever batch it is given, in eval mode too, so a test
  accuracy depends on how the test set is batched (clorch evaluates in
  batches of 4096), and anything that runs one sample at a time (EWC's
  per-sample Fisher) fails: BatchNorm1d cannot normalise a batch of one.
"""
from __future__ import annotations

from torch import nn

from methods.backbones import register_backbone

CONVS = ((64, 4, 0.2), (128, 3, 0.2), (256, 2, 0.5))  # (width, kernel, dropout after)
FCS = ((2048, 0.5), (2048, 0.5))


def _after_conv_and_pool(size: int, kernel: int) -> int:
    return (size - kernel + 1) // 2


class AlexNet(nn.Sequential):
    def __init__(self, input_shape: tuple[int, ...], bn_running_stats: bool = True):
        if len(input_shape) != 3:
            raise ValueError(f"alexnet needs image inputs (C, H, W), got shape {tuple(input_shape)}; "
                             "use backbone: mlp for flat inputs")
        c, h, w = input_shape
        for _, k, _ in CONVS:
            h, w = _after_conv_and_pool(h, k), _after_conv_and_pool(w, k)
        if h < 1 or w < 1:
            raise ValueError(f"alexnet needs images of at least 19x19 (three unpadded convs, each pooled by 2), "
                             f"got {tuple(input_shape)}")
        layers: list[nn.Module] = []
        c_in = c
        for width, k, p in CONVS:
            layers += [nn.Conv2d(c_in, width, k), nn.BatchNorm2d(width, track_running_stats=bn_running_stats),
                       nn.ReLU(), nn.Dropout(p), nn.MaxPool2d(2)]
            c_in = width
        layers.append(nn.Flatten())
        f_in = c_in * h * w
        for width, p in FCS:
            layers += [nn.Linear(f_in, width), nn.BatchNorm1d(width, track_running_stats=bn_running_stats),
                       nn.ReLU(), nn.Dropout(p)]
            f_in = width
        super().__init__(*layers)
        self.out_features = f_in


register_backbone("alexnet", lambda shape, p: AlexNet(shape, bn_running_stats=True))
register_backbone("alexnet_batch_stats", lambda shape, p: AlexNet(shape, bn_running_stats=False))
