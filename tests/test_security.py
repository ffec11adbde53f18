"""Safe defaults: checkpoints load without running code, credentials are never printed."""
import os
import pickle

import numpy as np
import pytest
import torch

import methods
from orchestrator.run.checkpoint import TrialState, UnsafeCheckpoint, load_state, save_state
from orchestrator.run.trial import run_trial
from orchestrator.study.schema import TrialSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

METHOD_STATES = [
    ("finetune", {"optimizer": "adam", "lr": 0.01}),
    ("finetune", {"optimizer": "adam", "lr": 0.01, "lr_scheduler": "lot", "lot_every": 5}),
    ("ewc", {"ewc_lambda": 10.0}),
    ("joint", {}),
    ("update_magnitude", {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "strategy": "adaptive", "k_min": 2}),
    ("halrp", {"backbone": "mlp", "hidden": [32, 32], "lr": 3e-3, "upper_rank": 8, "epochs": 2}),
]


@pytest.mark.parametrize("method,params", METHOD_STATES, ids=lambda v: v if isinstance(v, str) else None)
def test_every_methods_checkpoint_loads_weights_only_and_resumes_exactly(digits, tmp_path, method, params):
    """Saved after task 2, read back from the file with weights_only=True: the rest equals the uninterrupted run."""
    p = methods.METHODS.get(method).params(**{"epochs": 1, "batch_size": 32, **params}).model_dump()
    s = TrialSpec("t0", "c0", method, method, p, (3, 0, 4, 1, 2), 0, 0, "task_incremental", False)
    reports = []
    whole = run_trial(s, digits, report=reports.append, checkpoints=True)
    save_state(tmp_path, reports[1]["checkpoint"])
    torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)  # nothing but tensors and plain data
    state = load_state(tmp_path)
    assert state.tasks_done == 2
    resumed = run_trial(s, digits, report=lambda row: None, resume=state, checkpoints=True)
    assert resumed["matrix"] == whole["matrix"] and resumed["resumed_at"] == [2]


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_holding_a_foreign_pickled_object_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": 2, "tasks_done": 1, "rows": [], "method": {"x": _Boom(marker)}, "rng": {}},
               tmp_path / "state.pt")
    with pytest.raises(UnsafeCheckpoint, match=r"(?s)refusing to load checkpoint .*state\.pt.*system.*delete it"):
        load_state(tmp_path)
    assert not marker.exists()


def test_a_checkpoint_of_the_old_pickled_format_is_refused(tmp_path):
    torch.save({"tasks_done": 1, "rows": [], "method": {}, "rng": {"numpy": np.random.get_state()}},
               tmp_path / "state.pt")
    with pytest.raises(UnsafeCheckpoint, match="refusing to load checkpoint"):
        load_state(tmp_path)


def test_checkpoint_encoding_round_trips_numpy_tuples_deques_and_marker_like_keys(tmp_path):
    from collections import OrderedDict, deque

    od = OrderedDict(w=torch.ones(2))
    od._metadata = {"": {"version": 1}}
    method = {"arr": np.arange(6, dtype=np.uint32).reshape(2, 3), "scalar": np.float64(0.25), "tup": (1, (2.5, "a")),
              "dq": deque([1, 2], maxlen=4), "od": od, "gen": torch.Generator().manual_seed(3).get_state(),
              "user": {"__clorch__": "ndarray"}, "nested": [{"k": None, 3: b"x"}]}
    save_state(tmp_path, TrialState(1, [{"position": 0, "row": [0.5, None]}], method, {"numpy": np.random.get_state()}))
    back = load_state(tmp_path).method
    assert back["arr"].dtype == np.uint32 and (back["arr"] == method["arr"]).all()
    assert type(back["scalar"]) is np.float64 and back["scalar"] == 0.25
    assert back["tup"] == (1, (2.5, "a")) and back["dq"] == deque([1, 2]) and back["dq"].maxlen == 4
    assert back["od"]._metadata == {"": {"version": 1}} and torch.equal(back["od"]["w"], torch.ones(2))
    assert torch.equal(back["gen"], method["gen"])
    assert back["user"] == {"__clorch__": "ndarray"} and back["nested"] == [{"k": None, 3: b"x"}]


def test_a_state_that_cannot_be_stored_safely_fails_at_save_naming_where(tmp_path):
    with pytest.raises(TypeError, match=r"state\['method'\]\['opt'\].*cannot be checkpointed safely"):
        save_state(tmp_path, TrialState(1, [], {"opt": object()}))
