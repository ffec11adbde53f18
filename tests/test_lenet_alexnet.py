"""The LeNet (APD sizes + BN) and GPM-style AlexNet backbones, usable by every method."""
import pytest
import torch
from torch import nn

from datasets.benchmark import DeviceSplit
from methods import METHODS, MethodContext, seed_everything
from methods.alexnet import AlexNet
from methods.backbones import BACKBONES, build_backbone
from methods.lenet import LeNet


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_lenet_has_the_apd_sizes():
    net = LeNet((3, 32, 32))
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [tuple(m.weight.shape) for m in layers] == [(20, 3, 5, 5), (50, 20, 5, 5), (800, 3200), (500, 800)]
    assert [m.padding for m in layers[:2]] == [(2, 2), (2, 2)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net) == 2 and sum(isinstance(m, nn.BatchNorm1d) for m in net) == 2
    bn = 2 * (20 + 50 + 800 + 500)
    assert n_params(net) == (3 * 20 * 25 + 20) + (20 * 50 * 25 + 50) + (3200 * 800 + 800) + (800 * 500 + 500) + bn
    assert net.out_features == 500 and net(torch.randn(4, 3, 32, 32)).shape == (4, 500)
    assert LeNet((1, 28, 28))(torch.randn(2, 1, 28, 28)).shape == (2, 500)  # 50 * 7 * 7 flattened
    with pytest.raises(ValueError, match="protocol: halrp"):
        LeNet((784,))


def test_alexnet_gpm_sizes_dropout_and_the_batch_statistics_switch():
    net = AlexNet((3, 32, 32))
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [tuple(m.weight.shape) for m in layers] == [(64, 3, 4, 4), (128, 64, 3, 3), (256, 128, 2, 2),
                                                       (2048, 1024), (2048, 2048)]
    assert [m.p for m in net if isinstance(m, nn.Dropout)] == [0.2, 0.2, 0.5, 0.5, 0.5]
    assert net.out_features == 2048 and net(torch.randn(3, 3, 32, 32)).shape == (3, 2048)
    assert all(m.track_running_stats for m in net if isinstance(m, nn.modules.batchnorm._BatchNorm))
    quirk = build_backbone("alexnet_batch_stats", (3, 32, 32), None)
    bns = [m for m in quirk if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 5 and not any(m.track_running_stats for m in bns)
    # the quirk: in eval mode an input's output depends on the rest of its batch
    quirk.eval()
    x = torch.randn(8, 3, 32, 32)
    assert not torch.allclose(quirk(x)[:4], quirk(x[:4]))
    net.eval()
    assert torch.allclose(net(x)[:4], net(x[:4]), atol=1e-5)
    with pytest.raises(ValueError, match="19x19"):
        AlexNet((3, 16, 16))


@pytest.mark.parametrize("backbone,shape", [("lenet", (3, 16, 16)), ("alexnet", (3, 24, 24)),
                                            ("alexnet_batch_stats", (3, 24, 24))])
def test_every_method_can_use_them(backbone, shape):
    assert backbone in BACKBONES
    torch.manual_seed(0)
    x = torch.randn(64, *shape)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()
    # EWC's per-sample Fisher runs batches of one: BN without running statistics cannot normalise them
    for name in ("finetune",) if backbone == "alexnet_batch_stats" else ("finetune", "ewc"):
        entry = METHODS.get(name)
        seed_everything(0)
        ctx = MethodContext(shape, (2, 2), "task_incremental", torch.device("cpu"), 0)
        m = entry.target(entry.params(backbone=backbone, optimizer="adam", lr=1e-3, epochs=2, batch_size=16), ctx)
        m.learn_task(0, DeviceSplit(x, y))
        assert m.predict(x, 0).shape == (64, 2)
