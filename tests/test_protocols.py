"""Tuning protocols: search on the first k tasks (search.protocol first_tasks), and configs chosen on another study
(--configs-from)."""
import json

import numpy as np
import pytest
import yaml

from orchestrator.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def study_dict(root, name, **extra):
    d = {"name": name, "benchmark": {"name": "permuted_digits", "params": {"num_tasks": 3}},
         "orders": {"kind": "random", "count": 2, "seed": 0},
         "methods": [{"name": "finetune", "label": "ft",
                      "params": {"training": {"epochs": 1}, "optimizer": {"name": "sgd", "lr": {"grid": [0.01, 0.1]}}}}],
         "output_dir": str(root / "results"), "tracking": {"uri": f"sqlite:///{root}/mlflow.db"}}
    d.update(extra)
    return d


def write(root, d):
    path = root / f"{d['name']}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def summary_of(root, name):
    return json.loads((root / "results" / name / "summary.json").read_text())


def trials_of(root, name):
    return [json.loads(p.read_text()) for p in (root / "results" / name / "trials").glob("*.json")]


# ---------------------------------------------------------------- validation (no Ray)
@pytest.mark.parametrize("k", [0, 3, 5])
def test_first_tasks_must_leave_tasks_unseen(tmp_path, capsys, k):
    path = write(tmp_path, study_dict(tmp_path, "bad", search={"protocol": {"first_tasks": k}}))
    assert main(["validate", str(path)]) == 2
    assert "first_tasks" in capsys.readouterr().err


def test_first_tasks_validates(tmp_path, capsys):
    path = write(tmp_path, study_dict(tmp_path, "ok", search={"protocol": {"first_tasks": 2}}))
    assert main(["validate", str(path)]) == 0


def test_configs_from_a_missing_file_is_exit_2_naming_the_path(tmp_path, capsys):
    path = write(tmp_path, study_dict(tmp_path, "b"))
    missing = tmp_path / "results" / "nope"
    assert main(["run", str(path), "--configs-from", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing / "summary.json") in err and "results/<study>/" in err
    assert not (tmp_path / "results" / "b").exists()  # nothing started


def test_configs_from_without_best_is_exit_2(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text(json.dumps({"study": "a", "configs": []}))
    path = write(tmp_path, study_dict(tmp_path, "b"))
    assert main(["validate", str(path), "--configs-from", str(other)]) == 2
    assert "best" in capsys.readouterr().err


def _fake_summary(tmp_path, method="finetune"):
    other = tmp_path / "other"
    other.mkdir(exist_ok=True)
    params = {"training": {"epochs": 1}, "optimizer": {"name": "sgd", "lr": 0.1}}
    (other / "summary.json").write_text(json.dumps({
        "study": "a", "benchmark": {"name": "split_digits"},
        "configs": [{"config_id": "ft-1234", "label": "ft", "method": method, "params": params}],
        "best": {"ft": {"config_id": "ft-1234"}}}))
    return other


def test_validate_configs_from_fixes_matching_labels_and_lists_the_others(tmp_path, capsys):
    other = _fake_summary(tmp_path)
    d = study_dict(tmp_path, "b")
    d["methods"].append({"name": "finetune", "label": "mine", "params": {"training": {"epochs": 1}}})
    path = write(tmp_path, d)
    assert main(["validate", str(path), "--configs-from", str(other)]) == 0
    out = capsys.readouterr().out
    assert "ft (ft-1234)" in out and "kept as they are: mine" in out
    assert ": ok (4 trials" in out  # ft is one fixed config now (2 orders), mine another

    from orchestrator.study.loading import load_study

    study = load_study(path, configs_from=other)
    assert study.methods[0].params["optimizer"]["lr"] == 0.1
    assert study.configs_from["configs"] == {"ft": "ft-1234"}


def test_configs_from_with_another_method_under_the_label_is_exit_2(tmp_path, capsys):
    other = _fake_summary(tmp_path, method="ewc")
    path = write(tmp_path, study_dict(tmp_path, "b"))
    assert main(["validate", str(path), "--configs-from", str(other)]) == 2
    assert "'ewc'" in capsys.readouterr().err


# ---------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def first_tasks_study(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("first_tasks")
    d = study_dict(root, "ft2", search={"protocol": {"first_tasks": 2}})
    code = main(["run", str(write(root, d))])
    return root, code, summary_of(root, "ft2")


def _val_objective_by_hand(trials):
    """mean over trials of the mean final val accuracy over the 2 tasks learned (row 2 of the val matrix)."""
    accs = []
    for t in trials:
        V = np.array([[np.nan if v is None else v for v in row] for row in t["val_matrix"]], dtype=float)
        first = t["order"][:2]
        accs.append(np.mean(V[1, first]))
    return float(np.mean(accs))


def test_search_trials_learn_the_first_two_tasks_and_the_winner_runs_on_all(first_tasks_study):
    root, code, summary = first_tasks_study
    assert code == 0
    trials = trials_of(root, "ft2")
    search = [t for t in trials if t["label"] == "ft"]
    full = [t for t in trials if t["label"] == "ft@full"]
    assert len(search) == 4 and all(t["tasks_done"] == 2 and t["status"] == "completed" and t["max_tasks"] == 2
                                    for t in search)
    assert all(all(v is None for v in t["matrix"][2]) for t in search)  # never learned the third task
    assert len(full) == 2 and all(t["tasks_done"] == 3 and t["status"] == "completed" for t in full)
    assert {tuple(t["order"]) for t in full} == {tuple(o) for o in summary["orders"]}

    entries = {e["config_id"]: e for e in summary["configs"]}
    for cid in {t["config_id"] for t in search}:
        mine = [t for t in search if t["config_id"] == cid]
        assert entries[cid]["objective"] == pytest.approx(_val_objective_by_hand(mine))
        assert entries[cid]["R"] == 2
    best = summary["best"]["ft"]
    assert best["objective"] == max(entries[c]["objective"] for c in {t["config_id"] for t in search})
    assert best["full"]["config_id"] == best["config_id"] + "@full"
    assert {t["config_id"] for t in full} == {best["config_id"] + "@full"}
    assert "ft@full" not in summary["best"]


def test_the_full_run_reports_the_unseen_tasks(first_tasks_study):
    root, _, summary = first_tasks_study
    trials = [t for t in trials_of(root, "ft2") if t["label"] == "ft@full"]
    by_hand = np.mean([t["matrix"][2][t["order"][2]] for t in trials])
    entry = next(e for e in summary["configs"] if e["label"] == "ft@full")
    assert entry["unseen_acc_mean"] == pytest.approx(by_hand)
    assert summary["best"]["ft"]["full"]["unseen_acc_mean"] == pytest.approx(by_hand)
    assert summary["first_tasks"] == 2 and summary["search"]["protocol"] == {"first_tasks": 2}
    report = (root / "results" / "ft2" / "report.md").read_text()
    assert "first 2 tasks of its order" in report and "SEEN WHILE TUNING" in report
    assert "ACC tasks 3..3" in report


def test_configs_from_reuses_the_winner_without_a_search(first_tasks_study, capsys):
    root, _, first = first_tasks_study
    d = study_dict(root, "reuse", benchmark={"name": "permuted_digits", "params": {"num_tasks": 2}},
                   orders={"kind": "explicit", "orders": [[0, 1]]})
    code = main(["run", str(write(root, d)), "--configs-from", str(root / "results" / "ft2")])
    assert code == 0
    summary = summary_of(root, "reuse")
    assert len(summary["configs"]) == 1 and summary["trials_total"] == 1
    (entry,) = summary["configs"]
    winner = next(e for e in first["configs"] if e["config_id"] == first["best"]["ft"]["config_id"])
    assert entry["params"] == winner["params"] and entry["searched"] == {}
    assert entry["source_config_id"] == winner["config_id"]
    assert summary["configs_from"].endswith("ft2/summary.json")
    report = (root / "results" / "reuse" / "report.md").read_text()
    assert "configs chosen on study ft2 (benchmark permuted_digits)" in report
