"""ResNet9: the 9-block ResNet of specs/hybrid.md, as a backbone every method can use.

Block 1 is a single 3x3 conv + BN + ReLU (the stem); blocks 2..9 are residual
basic blocks (two 3x3 conv + BN, identity shortcut, or 1x1 conv + BN where the
shape changes); then global average pooling. It is the "reduced ResNet-18"
(stem + 8 basic blocks in stages) used by GEM/HALRP-style continual learning,
with the stage widths taken from ``channels``: one stage per entry, the eight
residual blocks dealt to the stages as evenly as possible (earlier stages get
the remainder), stride 2 at the first block of every stage but the first.
``channels: [16, 32, 64, 128]`` gives 2+2+2+2 blocks (our small default for
CPU studies); ``[20, 40, 80, 160]`` is the reduced ResNet-18 of the literature.

``blocks`` (an nn.ModuleList, input to output) are the units a method may
freeze and unfreeze (methods/update_magnitude.py).

``resnet18_halrp`` is the ResNet-18 of the HALRP code (lijiaqi/HALRP
models/resnet.py, ResNet_flat_18 with nf = 32, as HALRP_Res builds it): the
same stem + 8 basic blocks at widths 32/64/128/256, but every conv (stem,
block convs, 1x1 shortcuts) has a bias, BatchNorm keeps running statistics,
and the head sees F.avg_pool2d(out, 2) flattened instead of a global average:
256 x (H/16) x (W/16) features, 1024 on 3x32x32 (4096 on Tiny-ImageNet's
64x64). Its widths are fixed (``channels`` does not apply).
"""
from __future__ import annotations

import torch
from torch import nn

from methods.backbones import register_backbone

NUM_BLOCKS = 9


HALRP_WIDTHS = (32, 64, 128, 256)  # the HALRP code's ResNet-18, nf = 32


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, bias: bool = False) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias), nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    """relu(BN(conv(relu(BN(conv(x))))) + shortcut(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int, bias: bool = False):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(c_in, c_out, 3, stride, bias), nn.ReLU(),
                                  *_conv_bn(c_out, c_out, 3, 1, bias))
        changes = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride, bias)) if changes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def stage_sizes(residual_blocks: int, stages: int) -> list[int]:
    """Residual blocks per stage, as even as possible, the remainder to the first stages."""
    base, extra = divmod(residual_blocks, stages)
    return [base + (1 if s < extra else 0) for s in range(stages)]


class ResNet9(nn.Module):
    """``conv_bias``: every conv has a bias; ``pool``: ``global`` (adaptive average to 1x1) | ``avg2``
    (F.avg_pool2d(., 2), flattened: the HALRP code's head input)."""

    def __init__(self, input_shape: tuple[int, ...], channels: list[int] | tuple[int, ...] = (16, 32, 64, 128),
                 conv_bias: bool = False, pool: str = "global", name: str = "resnet9"):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"{name} needs image inputs (C, H, W), got shape {tuple(input_shape)}; for permuted_mnist use "
                "protocol: halrp (3x32x32), or split_mnist / rotated_mnist (1x28x28), or backbone: mlp")
        if min(input_shape[1:]) < (16 if pool == "avg2" else 8):
            raise ValueError(f"{name} needs images of at least {16 if pool == 'avg2' else 8}x"
                             f"{16 if pool == 'avg2' else 8}, got {tuple(input_shape)}; use backbone: small_cnn or mlp")
        if not 1 <= len(channels) <= NUM_BLOCKS - 1:
            raise ValueError(f"{name} takes 1 to {NUM_BLOCKS - 1} stage widths in channels, got {list(channels)}")
        blocks: list[nn.Module] = [nn.Sequential(*_conv_bn(input_shape[0], channels[0], 3, 1, conv_bias), nn.ReLU())]
        c_in = channels[0]
        h, w = input_shape[1:]
        for s, (width, n) in enumerate(zip(channels, stage_sizes(NUM_BLOCKS - 1, len(channels)))):
            for i in range(n):
                stride = 2 if s > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, width, stride=stride, bias=conv_bias))
                c_in = width
                h, w = (h - 1) // stride + 1, (w - 1) // stride + 1  # 3x3, padding 1
        self.blocks = nn.ModuleList(blocks)
        if pool == "avg2":
            self.pool = nn.Sequential(nn.AvgPool2d(2), nn.Flatten())
            self.out_features = c_in * (h // 2) * (w // 2)
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.pool(x)


register_backbone("resnet9", lambda shape, p: ResNet9(shape, p.channels))
register_backbone("resnet18_halrp", lambda shape, p: ResNet9(shape, HALRP_WIDTHS, conv_bias=True, pool="avg2",
                                                              name="resnet18_halrp"))
