"""Regression streams (specs/idbd.md) and the trial path for them."""
import json

import numpy as np
import pytest
import yaml

import datasets
import methods
from datasets.streams import optimal_rate
from orchestrator.cli import main
from orchestrator.study.schema import TrialSpec
from orchestrator.study.expand import expand_trials
from orchestrator.study.schema import StudyError
from orchestrator.study.loading import parse_study
from orchestrator.run.trial import run_trial


def stream(name, seed=0, **params):
    return datasets.load_benchmark(name, params).make_stream(seed)


def test_weight_flipping_is_the_papers_problem():
    s = stream("weight_flipping", steps=2000)
    assert s.x.shape == (2000, 20) and s.y.shape == (2000,)
    relevant = s.truth["relevant"]
    assert relevant.tolist() == [False] * 15 + [True] * 5
    w = s.truth["w_star_blocks"]  # w* during each block of 20 samples
    assert w.shape == (100, 20)
    assert np.all(w[:, :15] == 0) and np.all(np.abs(w[:, 15:]) == 1)
    changes = (w[1:] != w[:-1]).sum(axis=1)
    assert np.all(changes == 1)  # exactly one relevant weight flips between blocks
    block = np.repeat(np.arange(100), 20)
    assert np.allclose(s.y, np.einsum("td,td->t", s.x, w[block]))  # y = w*.x, no noise
    assert abs(s.x.mean()) < 0.05 and abs(s.x.std() - 1) < 0.05


def test_weight_flipping_scale_and_seeds():
    big = stream("weight_flipping", steps=200, target_scale=10.0)
    assert np.all(np.abs(big.truth["w_star_blocks"][:, 15:]) == 10)
    assert not np.array_equal(stream("weight_flipping", 0, steps=200).x, stream("weight_flipping", 1, steps=200).x)
    assert np.array_equal(stream("weight_flipping", 3, steps=200).y, stream("weight_flipping", 3, steps=200).y)


def test_rate_tracking_drift_is_redrawn_on_schedule():
    s = stream("rate_tracking", steps=300_000)
    sigma = s.truth["sigma"]
    assert s.x.shape == (300_000, 1) and np.all(s.x == 1)
    blocks = sigma.reshape(6, 50_000)
    assert np.all(blocks == blocks[:, :1]) and len(np.unique(blocks[:, 0])) == 6
    assert np.all((0 <= sigma) & (sigma <= 3))
    # y - z is unit noise, z a random walk of std sigma: successive differences of y have variance sigma^2 + 2
    d = np.diff(s.y)[:49_999]
    assert np.var(d) == pytest.approx(sigma[0] ** 2 + 2, rel=0.05)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 2.0, 3.0])
def test_optimal_rate_minimises_the_steady_state_error(sigma):
    """alpha* against a direct numeric minimisation of the steady-state squared error.

    With z_{t+1} = z_t + N(0, s^2), y = z + N(0, 1) and the estimate e <- e + a (y - e),
    the steady-state error variance P of e - z solves P = (1-a)^2 (P + s^2) + a^2, and the
    prediction error is P + s^2 + 1; alpha* minimises it.
    """
    a = np.linspace(1e-4, 1 - 1e-4, 200_001)
    P = ((1 - a) ** 2 * sigma ** 2 + a ** 2) / (1 - (1 - a) ** 2)
    best = a[np.argmin(P + sigma ** 2 + 1)]
    assert optimal_rate(np.array([sigma]))[0] == pytest.approx(best, abs=1e-3)


def test_stream_studies_need_no_orders_and_reject_classification_methods():
    base = {"name": "s", "benchmark": {"name": "weight_flipping", "params": {"steps": 500}},
            "methods": [{"name": "linear_idbd"}]}
    study = parse_study(base)
    assert study.task_orders() == [(0,)]
    assert len(expand_trials(study, "task_incremental")) == 1
    with pytest.raises(StudyError, match="it has no tasks to order; remove orders"):
        parse_study({**base, "orders": {"kind": "random", "count": 2}})
    with pytest.raises(StudyError, match=r"methods\[0\].name \(got 'finetune'\): learns classification benchmarks "
                                         r"but weight_flipping is a regression_stream; methods for it: autostep"):
        parse_study({**base, "methods": [{"name": "finetune"}]})
    with pytest.raises(StudyError, match="orders.*required for a classification benchmark"):
        parse_study({**base, "benchmark": {"name": "split_digits"}, "methods": [{"name": "finetune"}]})
    with pytest.raises(StudyError, match="learns regression_stream benchmarks but split_digits is a classification"):
        parse_study({**base, "benchmark": {"name": "split_digits"}, "orders": {"kind": "random", "count": 1}})


def test_stream_trial_reports_windowed_squared_error():
    bench = datasets.load_benchmark("weight_flipping", {"steps": 5000})
    p = methods.METHODS.get("linear_sgd").params(eta=0.02).model_dump()
    reports = []
    rec = run_trial(TrialSpec("t", "c", "linear_sgd", "linear_sgd", p, (0,), 0, 3, "task_incremental", False),
                    bench, report=reports.append)
    assert rec["kind"] == "regression_stream" and rec["status"] == "completed" and rec["steps"] == 5000
    assert rec["window"] == 50 and len(rec["window_mse"]) == 100
    assert np.mean(rec["window_mse"]) == pytest.approx(rec["mse"])
    assert reports == [{"record": rec, "mse": rec["mse"]}]
    assert rec["window_mse"][-1] < rec["window_mse"][0]  # it learns


def test_a_stream_study_through_ray_and_mlflow(ray_local, tmp_path, capsys):
    from mlflow import MlflowClient

    study = {"name": "wf", "benchmark": {"name": "weight_flipping", "params": {"steps": 4000}},
             "seeds": [0, 1],
             "methods": [{"name": "linear_sgd", "params": {"eta": {"grid": [0.01, 0.05]}}},
                         {"name": "oracle_sgd", "params": {"eta": 0.1}},
                         {"name": "linear_idbd", "params": {"theta": 50.0, "alpha0": 0.5}}],  # diverges
             "output_dir": str(tmp_path / "results"), "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}}
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", str(tmp_path / "wf.yaml")]) == 1  # the diverging config failed, the rest finished
    out = capsys.readouterr().out
    assert "MSE" in out and "oracle_sgd" in out
    summary = json.loads((tmp_path / "results" / "wf" / "summary.json").read_text())
    entries = {e["label"] + str(e["searched"]): e for e in summary["configs"]}
    assert entries["oracle_sgd{}"]["seeds"] == 2 and entries["oracle_sgd{}"]["mse_mean"] < 2
    failed = entries["linear_idbd{}"]
    assert failed["trials_failed"] == 2 and failed["mse_mean"] is None
    assert set(summary["best"]) == {"linear_sgd", "oracle_sgd"}  # a config that lost trials is never "best"
    assert summary["best"]["linear_sgd"]["value"] == min(
        e["mse_mean"] for e in summary["configs"] if e["label"] == "linear_sgd")
    trial = json.loads(next((tmp_path / "results" / "wf" / "trials").glob("linear_idbd*")).read_text())
    assert "TrainingDiverged" in trial["error"] and "lower the step-size" in trial["error"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("wf")
    runs = client.search_runs([exp.experiment_id], "tags.`clorch.level` = 'trial' and tags.`clorch.status` = 'completed'")
    assert len(runs) == 6
    history = client.get_metric_history(runs[0].info.run_id, "window_mse")
    assert len(history) == 100


def test_rate_tracking_figure_draws_one_seeds_trace_against_its_alpha_star():
    from orchestrator.report.stream_figures import step_size_figure

    def rec(seed, level):
        return {"status": "completed", "label": "linear_idbd", "config_id": "c1", "seed": seed,
                "step_trace": [[level], [level * 2]], "trace_every": 5,
                "truth": {"alpha_star": [0.5, 0.7]}}

    summary = {"best": {"linear_idbd": {"config_id": "c1"}}}
    fig = step_size_figure(summary, [rec(0, 0.1), rec(1, 0.4)])
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"linear_idbd", "alpha* (optimal)"}
    assert list(lines["linear_idbd"].get_ydata()) == [0.1, 0.2]  # seed 0's own trace, not an average
    assert list(lines["linear_idbd"].get_xdata()) == [0, 5]
    assert list(lines["alpha* (optimal)"].get_ydata()) == [0.5, 0.7]
    assert ax.get_yscale() == "log" and "seed 0" in ax.get_title()
