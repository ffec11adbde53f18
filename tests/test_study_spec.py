"""Study files: good ones validate and expand; bad ones get one clear message, exit 2, nothing written."""
import math
from pathlib import Path

import pytest
import yaml

from methods.registry import METHODS
from orchestrator.cli import main
from orchestrator.study.expand import expand_configs, expand_trials
from orchestrator.study.schema import StudyError
from orchestrator.study.loading import load_study, parse_study

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "name": "t",
    "benchmark": {"name": "split_digits"},
    "orders": {"kind": "random", "count": 3, "seed": 0},
    "methods": [{"name": "finetune", "params": {"epochs": 1}}],
}


def with_(path: str, value):
    """GOOD with one field replaced (dotted path); value None deletes it."""
    raw = yaml.safe_load(yaml.safe_dump(GOOD))
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = int(keys[-1]) if isinstance(node, list) else keys[-1]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return raw


BAD = [
    # (raw study, field the message must name, words it must contain)
    (with_("name", None), "name", "required but missing"),
    (with_("name", "bad name!"), "name", "use letters, digits"),
    (with_("benchmark.name", "split_mnistt"), "benchmark.name", "unknown benchmark; available: "),
    (with_("benchmark.params", {"classes_per_task": 3}), "benchmark.params", "must divide 10"),
    (with_("benchmark.params", {"clases": 2}), "benchmark.params.clases", "unknown parameter; allowed: val_fraction, train_fraction"),
    (with_("benchmark.params", {"test_fraction": {"grid": [0.1, 0.2]}}), "benchmark.params.test_fraction", "one value, not a search space"),
    (with_("benchmark.setting", "class_il"), "benchmark.setting", "'task_incremental', 'domain_incremental' or 'class_incremental'"),
    (with_("orders", {"kind": "shuffled"}), "orders", "must be one of random, explicit, apd, latin_square, williams"),
    (with_("orders.count", 0), "orders.count", "greater than or equal to 1"),
    (with_("orders", {"kind": "explicit", "orders": [[0, 1, 2, 3, 4], [0, 1, 2, 2, 4]]}), "orders.orders[1]", "missing [3], repeated [2]"),
    (with_("orders", {"kind": "explicit", "orders": [[0, 1, 2]]}), "orders.orders[0]", "has 3 entries but the benchmark has 5 tasks"),
    (with_("orders", {"kind": "apd", "set": "cifar100_split"}), "orders", "orders 10 tasks but the benchmark has 5"),
    (with_("orders", {"kind": "apd", "set": "cifar10"}), "orders.set", "'cifar100_split' or 'cifar100_superclass'"),
    (with_("methods", []), "methods", "at least 1 item"),
    (with_("methods.0.name", "ewcc"), "methods[0].name", "unknown method; available: " + ", ".join(METHODS.names())),
    (with_("methods.0.params", {"lr": -1}), "methods[0].params.optimizer.lr", "greater than 0"),  # a flat key
    (with_("methods.0.params", {"optimizer": {"name": "sgd", "lr": -1}}), "methods[0].params.optimizer.lr",
     "greater than 0"),
    (with_("methods.0.params", {"optimizer": "adamw"}), "methods[0].params.optimizer", "'name' must be one of 'sgd', 'adam', 'rmsprop', 'idbd'"),
    (with_("methods.0.params", {"optimizer": {"name": "adam", "momentum": 0.9}}), "methods[0].params.optimizer.momentum",
     "unknown parameter"),
    (with_("methods.0.params", {"learning_rate": 0.1}), "methods[0].params.learning_rate", "unknown parameter; allowed: network, training, optimizer"),
    (with_("methods.0.params", {"optimizer": {"name": "sgd", "lr": {"grid": [0.1, 20.0]}}}),
     "methods[0].params.optimizer.lr.grid[1]", "less than or equal to 10"),
    (with_("methods.0.params", {"penalties": [{"name": "l2", "lambda": {"uniform": [1.0, 0.5]}}]}),
     "methods[0].params.penalties.0.lambda", "low < high"),
    (with_("methods.0.params", {"lr": {"grid": [0.1, 20.0]}}), "methods[0].params.lr.grid[1]", "less than or equal to 10"),
    (with_("methods.0.params", {"lr": {"loguniform": [0, 0.1]}}), "methods[0].params.lr", "0 < low < high"),
    (with_("methods.0.params", {"momentum": {"uniform": [0.5, 0.1]}}), "methods[0].params.momentum", "low < high"),
    (with_("methods.0.params", {"optimizer": {"choice": ["sgd", "lion"]}}), "methods[0].params.optimizer.choice[1]", "must be one of 'sgd', 'adam', 'rmsprop', 'idbd'"),
    (with_("methods", [{"name": "finetune"}, {"name": "finetune"}]), "methods[1].label", "give each entry a distinct label"),
    (with_("seeds", [1, 1]), "seeds", "distinct"),
    (with_("baseline", "ewc"), "baseline", "names no method label; labels: finetune"),
    (with_("resources", {"cpu": 0}), "resources.cpu", "greater than 0"),
    (with_("resources", {"gpus": 1}), "resources", "unknown key 'gpus'; allowed keys: cpu, gpu"),
    (with_("tracking", {"url": "x"}), "tracking", "unknown key 'url'; allowed keys: uri, experiment"),
]


@pytest.mark.parametrize("raw, field, words", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_study_gets_a_message_naming_field_and_fix(raw, field, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    for command in ("validate", "run"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert f"  {field}" in err, err
        assert words in err, err
        assert "nothing was run" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # nothing started or written


def test_unreadable_and_malformed_files(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read the study file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethods: [\n")
    assert main(["validate", str(bad)]) == 2
    assert "not valid YAML: line 3" in capsys.readouterr().err
    bad.write_text("- just\n- a list\n")
    assert main(["validate", str(bad)]) == 2
    assert "a study file is a YAML mapping" in capsys.readouterr().err


def test_quickstart_validates_with_its_trial_count(capsys):
    assert main(["validate", str(ROOT / "studies" / "quickstart.yaml")]) == 0
    assert "ok (60 trials, 5 tasks per order)" in capsys.readouterr().out


def test_set_overrides_fields_before_validation(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    study = load_study(path, ["orders.count=5", "methods.0.params.lr=0.2", "seeds=[1, 2]"])
    assert study.orders.count == 5 and study.methods[0].params["lr"] == 0.2 and study.seeds == [1, 2]
    with pytest.raises(StudyError, match="use --set key.path=value"):
        load_study(path, ["orders.count"])
    with pytest.raises(StudyError, match=r"orders.count \(got 'many'\)"):
        load_study(path, ["orders.count=many"])


def test_expansion_crosses_grids_and_draws_random_params_reproducibly():
    raw = with_("methods.0.params", {"lr": {"loguniform": [1e-4, 1e-1]}, "optimizer": {"grid": ["sgd", "adam"]},
                                     "epochs": 1})
    raw["search"] = {"num_samples": 3, "seed": 5}
    raw["seeds"] = [0, 1]
    study = parse_study(raw)
    configs = expand_configs(study)
    assert len(configs) == 2 * 3
    assert [c.params["optimizer"]["name"] for c in configs] == ["sgd"] * 3 + ["adam"] * 3
    assert all(1e-4 <= c.params["optimizer"]["lr"] <= 1e-1 for c in configs)  # flat keys land in the component
    assert len({c.params["optimizer"]["lr"] for c in configs}) == 6
    assert [c.config_id for c in configs] == [c.config_id for c in expand_configs(parse_study(raw))]
    assert configs[0].params["training"]["batch_size"] == 32  # defaults filled in, so the record is complete
    assert set(configs[0].searched) == {"lr", "optimizer"}
    trials = expand_trials(study, "task_incremental")
    assert len(trials) == 6 * 3 * 2
    assert trials[0].searched == configs[0].searched
    assert len({t.trial_id for t in trials}) == len(trials)
    assert {t.order for t in trials} == set(study.task_orders())


def test_a_search_space_at_a_nested_leaf_expands_like_a_flat_one():
    nested = with_("methods.0.params", {"optimizer": {"name": "adam", "lr": {"loguniform": [1e-4, 1e-1]}},
                                        "training": {"epochs": 1}})
    flat = with_("methods.0.params", {"optimizer": "adam", "lr": {"loguniform": [1e-4, 1e-1]}, "epochs": 1})
    for raw in (nested, flat):
        raw["search"] = {"num_samples": 2, "seed": 5}
    a, b = expand_configs(parse_study(nested)), expand_configs(parse_study(flat))
    assert [c.params for c in a] == [c.params for c in b]  # same draws, same full params
    assert set(a[0].searched) == {"optimizer.lr"} and set(b[0].searched) == {"lr"}
    assert a[0].params["optimizer"] == {"name": "adam", "lr": a[0].searched["optimizer.lr"], "weight_decay": 0.0}


def test_old_flat_method_keys_validate_with_one_note_each(tmp_path, capsys):
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(with_("methods.0.params", {"optimizer": "adam", "lr": 0.01, "epochs": 2})))
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "clorch: note: methods[0].params: flat key 'lr' is deprecated" in err
    assert "optimizer: {name: adam, lr: 0.01}" in err and "flat key 'epochs'" in err


def test_setting_defaults_to_the_benchmarks_and_can_be_overridden():
    study = parse_study(GOOD)
    assert expand_trials(study, "domain_incremental")[0].setting == "domain_incremental"
    raw = with_("benchmark.setting", "task_incremental")
    assert expand_trials(parse_study(raw), "domain_incremental")[0].setting == "task_incremental"


@pytest.mark.parametrize("orders, count", [
    ({"kind": "latin_square"}, 5), ({"kind": "williams"}, 10),
    ({"kind": "explicit", "orders": [[4, 3, 2, 1, 0]]}, 1),
])
def test_every_order_kind_runs_through_the_spec(orders, count):
    assert len(parse_study(with_("orders", orders)).task_orders()) == count


def test_list_shows_methods_benchmarks_types_and_defaults(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "finetune" in out and "split_digits" in out and "permuted_digits" in out
    assert "optimizer: {name: sgd | adam | rmsprop | idbd, ...}" in out and "optimizer (sgd | adam | rmsprop | idbd = sgd)" in out
    assert "lr: float = 0.01  [>0.0, <=10.0]" in out
    assert "hidden: list[int (positive)] = [100, 100]" in out


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_file_loads_and_checks_clean(path):
    """A study file in the repository is an example users copy: its schema, params and orders must hold
    (resources are checked against the machine only at run time, so a GPU study passes here)."""
    from orchestrator.study.checks import check_study
    from orchestrator.study.loading import load_study

    assert check_study(load_study(path)) == []
