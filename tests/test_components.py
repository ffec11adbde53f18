"""Typed parameter components (methods/components.py): nested params, the flat-key bridge, the listing."""
from __future__ import annotations

import warnings

import pytest
from pydantic import ValidationError

import methods
from methods.components import FlatKeyDeprecation, components_of, own_fields
from methods.lot_scheduler import LotSchedule, NoSchedule
from methods.optimizers import Adam, Idbd, Rmsprop, Sgd
from methods.penalties import L2, Wasserstein

P = {name: methods.METHODS.get(name).params for name in ("finetune", "ewc", "joint", "update_magnitude", "halrp")}


def flat(name: str, data: dict):
    """Validate old flat ``data``, asserting it warns with FlatKeyDeprecation."""
    with pytest.warns(FlatKeyDeprecation):
        return P[name].model_validate(data)


def nested(name: str, data: dict):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlatKeyDeprecation)
        return P[name].model_validate(data)


# ---------------------------------------------------------------- old flat == new nested
@pytest.mark.parametrize("name,old,new", [
    ("finetune",
     dict(backbone="mlp", hidden=[64], activation="crelu", epochs=3, batch_size=16, reset_optimizer=False,
          optimizer="adam", lr=0.001, weight_decay=0.01, lr_scheduler="lot", lot_every=10, lot_safety=0.5,
          lot_keep_lr=False, wasserstein_lambda=0.01, l2_lambda=0.0),
     dict(network={"backbone": "mlp", "hidden": [64], "activation": "crelu"},
          training={"epochs": 3, "batch_size": 16, "reset_optimizer": False},
          optimizer={"name": "adam", "lr": 0.001, "weight_decay": 0.01},
          lr_scheduler={"name": "lot", "every": 10, "safety": 0.5, "keep_lr": False},
          penalties=[{"name": "wasserstein", "lambda": 0.01}])),
    ("finetune",
     dict(optimizer="idbd", lr=0.05, idbd_meta_lr=0.01, idbd_normalized=True, idbd_groups="layer", idbd_max_step=5.0,
          momentum=0.0, weight_decay=0.0),  # idbd has neither: the old defaults are dropped
     dict(optimizer={"name": "idbd", "lr": 0.05, "meta_lr": 0.01, "normalized": True, "groups": "layer",
                     "max_step": 5.0})),
    ("ewc",
     dict(ewc_lambda=10.0, optimizer="sgd", lr=0.05, momentum=0.9, epochs=2, l2_lambda=0.001),
     dict(ewc_lambda=10.0, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9}, training={"epochs": 2},
          penalties=[{"name": "l2", "lambda": 0.001}])),
    ("update_magnitude",
     dict(strategy="frozen", k_min=1, backbone="resnet9", channels=[8, 16], epochs=3, optimizer="rmsprop",
          lr=0.02, momentum=0.5),
     dict(strategy="frozen", k_min=1, network={"backbone": "resnet9", "channels": [8, 16]}, training={"epochs": 3},
          optimizer={"name": "rmsprop", "lr": 0.02, "momentum": 0.5})),
    ("halrp",
     dict(preset="pmnist", epochs=4, lr=0.002, wd_rate=0.01),
     dict(preset="pmnist", training={"epochs": 4}, optimizer={"lr": 0.002}, wd_rate=0.01)),
    ("halrp",
     dict(backbone="small_cnn", optimizer="sgd", epochs=3, batch_size=8),
     dict(network={"backbone": "small_cnn"}, optimizer={"name": "sgd"}, training={"epochs": 3, "batch_size": 8})),
])
def test_old_flat_keys_validate_to_the_same_model_as_the_nested_ones(name, old, new):
    a, b = flat(name, old), nested(name, new)
    assert a == b
    dumped = b.model_dump(mode="json")
    assert nested(name, dumped) == b  # the stored (nested) form re-validates to itself, without warnings


def test_keyword_construction_keeps_working_and_warns_per_key():
    with pytest.warns(FlatKeyDeprecation) as caught:
        p = P["finetune"](epochs=1, optimizer="adam", lr=0.01)
    assert p.training.epochs == 1 and p.optimizer == Adam(lr=0.01)
    texts = [str(w.message) for w in caught]
    assert "flat key 'lr' is deprecated (one release): write optimizer: {name: adam, lr: 0.01}" in texts
    assert any(t.startswith("flat key 'epochs' is deprecated (one release): write training: {epochs: 1}")
               for t in texts)
    assert issubclass(FlatKeyDeprecation, DeprecationWarning)


def test_mixed_old_and_new_keys_merge_when_consistent_and_refuse_a_contradiction():
    with pytest.warns(FlatKeyDeprecation):
        p = P["finetune"](optimizer={"name": "adam"}, lr=0.003, network={"hidden": [8]}, backbone="mlp")
    assert p.optimizer == Adam(lr=0.003) and p.network.hidden == [8]
    with pytest.warns(FlatKeyDeprecation):
        assert P["finetune"](penalties=[{"name": "l2", "lambda": 0.1}], l2_lambda=0.1).penalties == [L2(lam=0.1)]
    with pytest.raises(ValidationError, match="flat key 'lr'=0.2 contradicts optimizer.lr=0.1"):
        P["finetune"](optimizer={"name": "sgd", "lr": 0.1}, lr=0.2)
    with pytest.raises(ValidationError, match="flat key 'epochs'=2 contradicts training.epochs=3"):
        P["finetune"](training={"epochs": 3}, epochs=2)


def test_zero_penalty_lambdas_give_no_entry():
    with pytest.warns(FlatKeyDeprecation):
        assert P["finetune"](wasserstein_lambda=0.0, l2_lambda=0).penalties == []


# ---------------------------------------------------------------- each component has only its own fields
def test_each_optimizer_has_only_its_own_fields():
    assert set(Sgd.model_fields) == {"name", "lr", "momentum", "weight_decay"}
    assert set(Adam.model_fields) == {"name", "lr", "weight_decay"}
    assert set(Rmsprop.model_fields) == {"name", "lr", "momentum", "weight_decay"}
    assert set(Idbd.model_fields) == {"name", "lr", "meta_lr", "groups", "curvature", "normalized", "max_step"}
    with pytest.raises(ValidationError, match="optimizer.adam.momentum\n  Extra inputs are not permitted"):
        nested("finetune", {"optimizer": {"name": "adam", "momentum": 0.9}})
    assert nested("finetune", {}).optimizer == Sgd() and nested("finetune", {}).lr_scheduler == NoSchedule()
    assert nested("finetune", {"optimizer": {"lr": 0.1}}).optimizer == Sgd(lr=0.1)  # no name: the default's


def test_momentum_with_adam_is_refused_naming_the_key_and_the_fix():
    with pytest.raises(ValidationError, match=r"flat key 'momentum' does not belong to optimizer 'adam' .*"
                                              r"e\.g\. optimizer: \{name: sgd, momentum: 0\.9\}"):
        P["finetune"](optimizer="adam", momentum=0.9)
    with pytest.raises(ValidationError, match="flat key 'lot_every' does not belong to lr_scheduler 'none'"):
        P["finetune"](lot_every=5)


def test_the_optimizer_builds_its_torch_optimiser():
    import torch

    w = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(Sgd(lr=0.1, momentum=0.5).build(w), torch.optim.SGD)
    assert isinstance(Adam().build(w), torch.optim.Adam) and isinstance(Rmsprop().build(w), torch.optim.RMSprop)
    assert type(Idbd().build(w)).__name__ == "IDBD"


@pytest.mark.parametrize("weight_decay", (0.0, 0.01))
@pytest.mark.parametrize("name", ("adam", "rmsprop"))
def test_adam_and_rmsprop_step_all_tensors_at_once_with_the_same_bits_as_torchs_per_tensor_step(name, weight_decay):
    """clorch's Adam and RMSprop are torch's multi-tensor step (fewer calls on the CPU), equal to the per-tensor one."""
    import torch

    gen = torch.Generator().manual_seed(0)
    shapes = [(16, 8), (16,), (3, 16), (3,), (5, 1, 2)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    if name == "adam":
        opt_ours = Adam(lr=0.01, weight_decay=weight_decay).build(ours)
        opt_theirs = torch.optim.Adam(theirs, lr=0.01, weight_decay=weight_decay, foreach=False)
    else:
        opt_ours = Rmsprop(lr=0.01, momentum=0.5, weight_decay=weight_decay).build(ours)
        opt_theirs = torch.optim.RMSprop(theirs, lr=0.01, momentum=0.5, weight_decay=weight_decay, foreach=False)
    assert opt_ours.defaults["foreach"] is True
    for _ in range(6):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen)
            b.grad = a.grad.clone()
        opt_ours.step()
        opt_theirs.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert not torch.equal(ours[0], start[0])


def test_lot_needs_adam_and_crelu_needs_a_backbone_that_honours_it():
    with pytest.raises(ValidationError, match=r"lr_scheduler 'lot' reads Adam's state .* set optimizer: \{name: adam\}"):
        nested("finetune", {"lr_scheduler": {"name": "lot"}})
    assert isinstance(nested("finetune", {"optimizer": {"name": "adam"}, "lr_scheduler": {"name": "lot"}}).lr_scheduler,
                      LotSchedule)
    with pytest.raises(ValidationError, match="activation 'crelu' is not supported by backbone 'resnet9'"):
        nested("ewc", {"network": {"backbone": "resnet9", "activation": "crelu"}})


def test_penalty_lambda_is_read_and_written_as_lambda():
    p = nested("finetune", {"penalties": [{"name": "wasserstein", "lambda": 0.5}, {"name": "l2", "lambda": 0.1}]})
    assert p.penalties == [Wasserstein(lam=0.5), L2(lam=0.1)]
    assert p.model_dump(mode="json")["penalties"] == [{"name": "wasserstein", "lambda": 0.5}, {"name": "l2", "lambda": 0.1}]
    with pytest.raises(ValidationError, match="penalties.0.l2.lambda"):
        nested("finetune", {"penalties": [{"name": "l2", "lambda": -1.0}]})


# ---------------------------------------------------------------- HALRP takes only what it accepts
def test_halrp_declares_only_what_it_accepts():
    assert components_of(P["halrp"]) == {"network": ["network"], "training": ["training"],
                                         "optimizer": ["optimizer adam", "optimizer sgd", "optimizer rmsprop"]}
    assert "lr_scheduler" not in P["halrp"].model_fields and "penalties" not in P["halrp"].model_fields
    for bad in ({"lr_scheduler": {"name": "lot"}}, {"lr_scheduler": "none"}, {"penalties": []},
                {"l2_lambda": 0.1}, {"lot_every": 3}):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            P["halrp"].model_validate(bad)
    default = nested("halrp", {})
    assert default.optimizer.name == "adam" and default.optimizer.lr == 1e-3
    assert nested("halrp", {"optimizer": {"name": "sgd"}}).optimizer.lr == 1e-3
    with pytest.raises(ValidationError, match="optimizer"):
        nested("halrp", {"optimizer": {"name": "idbd"}})


def test_components_of_the_gradient_methods():
    c = components_of(P["finetune"])
    assert c["optimizer"] == ["optimizer sgd", "optimizer adam", "optimizer rmsprop", "optimizer idbd"]
    assert c["lr_scheduler"] == ["lr_scheduler none", "lr_scheduler lot"]
    assert c["penalties"] == ["penalty wasserstein", "penalty l2"]
    assert own_fields(P["finetune"]) == [] and own_fields(P["ewc"])[0] == "ewc_lambda"


# ---------------------------------------------------------------- listing
def test_listing_prints_each_shared_component_once():
    from orchestrator.study.listing import describe_all, describe_one

    text = describe_all()
    lines = text.splitlines()
    assert sum(line.strip().startswith("meta_lr:") for line in lines) == 1
    assert sum(line.strip().startswith("safety:") for line in lines) == 1
    assert sum(line.strip().startswith("backbone:") for line in lines) == 1
    assert text.index("components") < text.index("backbones") < text.index("methods:") < text.index("benchmarks:")
    assert "optimizer (adam | sgd | rmsprop = adam; lr = 0.001 here)" in text
    one = describe_one("finetune")
    assert len(one.splitlines()) < 40
    for part in ("network: network", "training: training", "optimizer: sgd | adam | rmsprop | idbd = sgd",
                 "lr_scheduler: none | lot = none", "penalties: list[wasserstein | l2] = []", "meta_lr:", "safety:"):
        assert part in one
    assert "lr: float = 0.001" in describe_one("halrp") and "safety:" not in describe_one("halrp")
    assert describe_one("permuted_digits").startswith("benchmark permuted_digits")
    assert describe_all(["finetune", "ewc"]).count("method ") == 2
    with pytest.raises(KeyError, match="no method or benchmark named 'nope'"):
        describe_one("nope")
