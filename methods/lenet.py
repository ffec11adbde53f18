"""LeNet with BatchNorm at the sizes of APD/HALRP (specs/halrp.md), as a backbone every method can use.

conv 20@5x5 pad 2 -> BN -> ReLU -> maxpool 2 -> conv 50@5x5 pad 2 -> BN -> ReLU
-> maxpool 2 -> flatten -> FC 800 -> BN -> ReLU -> FC 500 -> BN -> ReLU; the
head (500 -> classes) belongs to the method. On 3x32x32 inputs (permuted MNIST
under ``protocol: halrp``, CIFAR) the flattened size is 50*8*8 = 3200, as in
the paper; other image sizes give 50*(H//4)*(W//4).

The widths are fixed (the issue asks for the APD sizes): ``hidden``/``channels``
of the network component do not apply to it. Like every BatchNorm1d network it cannot
train on a minibatch of one sample; the shared loop (methods/loop.py) never
makes one unless a task has a single training sample.
"""
from __future__ import annotations

from torch import nn

from methods.backbones import register_backbone

CONV_WIDTHS = (20, 50)
FC_WIDTHS = (800, 500)


class LeNet(nn.Sequential):
    def __init__(self, input_shape: tuple[int, ...]):
        if len(input_shape) != 3:
            raise ValueError(f"lenet needs image inputs (C, H, W), got shape {tuple(input_shape)}; for "
                             "permuted_mnist use protocol: halrp (3x32x32), or backbone: mlp")
        c, h, w = input_shape
        if h < 4 or w < 4:
            raise ValueError(f"lenet pools twice by 2: it needs images of at least 4x4, got {tuple(input_shape)}")
        flat = CONV_WIDTHS[1] * (h // 4) * (w // 4)
        super().__init__(
            nn.Conv2d(c, CONV_WIDTHS[0], 5, padding=2), nn.BatchNorm2d(CONV_WIDTHS[0]), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(CONV_WIDTHS[0], CONV_WIDTHS[1], 5, padding=2), nn.BatchNorm2d(CONV_WIDTHS[1]), nn.ReLU(),
            nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(flat, FC_WIDTHS[0]), nn.BatchNorm1d(FC_WIDTHS[0]), nn.ReLU(),
            nn.Linear(FC_WIDTHS[0], FC_WIDTHS[1]), nn.BatchNorm1d(FC_WIDTHS[1]), nn.ReLU(),
        )
        self.out_features = FC_WIDTHS[1]


register_backbone("lenet", lambda shape, p: LeNet(shape))
