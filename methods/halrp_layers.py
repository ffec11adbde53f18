"""HALRP's perturbed layers: a frozen base weight W0 seen through one task's scales and low-rank factors.

Names here -> specs/halrp.md: ``scale_out`` = mR (out), ``scale_in`` = mS (in),
``factor_out`` = R (out x r), ``factor_in`` = S (r x in).

- Linear: W_t = diag(mR) W0 diag(mS) + R S.
- Conv (out, in, kh, kw): W_t[o,i] = mR[o] mS[i] W0[o,i] + (R S)[o,i] * ones(kh, kw).

W0 is the base network's weight tensor itself (detached, shared by every task,
never copied): it is a plain attribute, not a parameter or buffer, so a task's
``state_dict`` holds only what the task owns (bias, scales, factors). The
method saves the base once and re-links W0 on load.

The conv forms W_t (out x in x kh x kw: small beside the activations) and
runs one convolution with it: the cost of the base network's conv, forward
and backward, the scales' and factors' gradients following from dW_t on the
kernel. The other way (``compose = False``): the scaled conv (scale the input
channels, conv with W0, scale the output channels) plus the rank-r path 1x1
conv with S -> sum-pool over the kernel window with the layer's stride and
padding (zeros counted) -> 1x1 conv with R, which never forms W_t but runs
three convolutions and a sum-pool over the whole batch: 1.4x the step of the
LeNet's later tasks, where forming W_t is about what finetune pays. The
sum-pool of the projected input is exactly the conv of the input with
(R S)[o,i] * ones: both add the same window of (zero-padded) inputs.
avg_pool2d cannot express dilation, or padding beyond half the kernel, so such
layers always form W_t. A linear layer keeps the factored form (scale, W0,
scale, plus the rank-r path): with a batch smaller than its sides that is the
cheaper one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerturbedLinear(nn.Module):
    def __init__(self, weight0: torch.Tensor, bias: torch.Tensor | None, rank: int):
        super().__init__()
        out_f, in_f = weight0.shape
        self.weight0 = weight0.detach()  # plain attribute: shared with the base, not in state_dict
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.scale_out = nn.Parameter(torch.ones(out_f, device=weight0.device, dtype=weight0.dtype))
        self.scale_in = nn.Parameter(torch.ones(in_f, device=weight0.device, dtype=weight0.dtype))
        self.factor_out = nn.Parameter(torch.zeros(out_f, rank, device=weight0.device, dtype=weight0.dtype))
        self.factor_in = nn.Parameter(torch.zeros(rank, in_f, device=weight0.device, dtype=weight0.dtype))

    @property
    def rank(self) -> int:
        return self.factor_in.shape[0]

    def composed_weight(self) -> torch.Tensor:
        return self.scale_out[:, None] * self.weight0 * self.scale_in[None, :] + self.factor_out @ self.factor_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x * self.scale_in, self.weight0) * self.scale_out
        y = y + F.linear(F.linear(x, self.factor_in), self.factor_out)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in={self.scale_in.numel()}, out={self.scale_out.numel()}, rank={self.rank}"


class PerturbedConv2d(nn.Module):
    compose = True  # form W_t and run one conv; False: the scaled conv plus the pooled rank-r path

    def __init__(self, base: nn.Conv2d, bias: torch.Tensor | None, rank: int):
        super().__init__()
        if base.groups != 1:
            raise ValueError(f"halrp perturbs dense convolutions only; a conv has groups={base.groups}")
        if base.padding_mode != "zeros":
            raise ValueError(f"halrp needs zero padding; a conv has padding_mode={base.padding_mode!r}")
        w = base.weight
        out_c, in_c, kh, kw = w.shape
        self.weight0 = w.detach()
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.stride, self.padding, self.dilation = base.stride, base.padding, base.dilation
        self.kernel_size = (kh, kw)
        self.scale_out = nn.Parameter(torch.ones(out_c, device=w.device, dtype=w.dtype))
        self.scale_in = nn.Parameter(torch.ones(in_c, device=w.device, dtype=w.dtype))
        self.factor_out = nn.Parameter(torch.zeros(out_c, rank, device=w.device, dtype=w.dtype))
        self.factor_in = nn.Parameter(torch.zeros(rank, in_c, device=w.device, dtype=w.dtype))
        numeric = not isinstance(self.padding, str)
        self.pooled = (numeric and tuple(self.dilation) == (1, 1)
                       and all(p <= k // 2 for p, k in zip(self.padding, self.kernel_size)))

    @property
    def rank(self) -> int:
        return self.factor_in.shape[0]

    def composed_weight(self) -> torch.Tensor:
        scaled = self.scale_out[:, None, None, None] * self.weight0 * self.scale_in[None, :, None, None]
        return scaled + (self.factor_out @ self.factor_in)[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compose or not self.pooled:
            return F.conv2d(x, self.composed_weight(), self.bias, self.stride, self.padding, self.dilation)
        y = F.conv2d(x * self.scale_in[None, :, None, None], self.weight0, None, self.stride, self.padding)
        y = y * self.scale_out[None, :, None, None]
        z = F.conv2d(x, self.factor_in[:, :, None, None])
        kh, kw = self.kernel_size
        if (kh, kw) != (1, 1) or tuple(self.stride) != (1, 1):
            z = F.avg_pool2d(z, self.kernel_size, self.stride, self.padding, count_include_pad=True) * (kh * kw)
        y = y + F.conv2d(z, self.factor_out[:, :, None, None])
        return y if self.bias is None else y + self.bias[None, :, None, None]

    def extra_repr(self) -> str:
        return (f"in={self.scale_in.numel()}, out={self.scale_out.numel()}, kernel={self.kernel_size}, "
                f"stride={tuple(self.stride)}, rank={self.rank}")


Perturbed = (PerturbedLinear, PerturbedConv2d)
_SHARED_TYPES = (nn.Conv2d, nn.Linear)
_COPIED_TYPES = (nn.modules.batchnorm._BatchNorm,)


def perturbable_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every nn.Conv2d and nn.Linear of the backbone, by qualified name, input to output.

    Any other module that holds parameters, apart from BatchNorm (copied per
    task), is an error: HALRP would have no way to give a task its own version.
    """
    layers = []
    for name, m in backbone.named_modules():
        if isinstance(m, _SHARED_TYPES):
            layers.append((name, m))
        elif not isinstance(m, _COPIED_TYPES) and any(True for _ in m.parameters(recurse=False)):
            raise ValueError(f"halrp perturbs Conv2d and Linear layers and copies BatchNorm per task; the backbone "
                             f"has a {type(m).__name__} with parameters at {name!r}: use mlp, small_cnn, lenet, "
                             "alexnet or resnet9")
    if not layers:
        raise ValueError("halrp found no Conv2d or Linear layer to perturb in the backbone")
    return layers


def make_perturbed(base: nn.Module, bias: torch.Tensor | None, rank: int) -> nn.Module:
    """A zero-initialised task layer over ``base``'s weight (the caller sets scales and factors)."""
    if isinstance(base, nn.Linear):
        return PerturbedLinear(base.weight, bias, rank)
    return PerturbedConv2d(base, bias, rank)


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (dotted path) of ``root`` is."""
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def kernel_positions(layer: nn.Module) -> int:
    """c_l of the rank score: kh*kw for a conv, 1 for a linear layer."""
    w = layer.weight0 if isinstance(layer, Perturbed) else layer.weight
    return int(w[0, 0].numel()) if w.dim() == 4 else 1
