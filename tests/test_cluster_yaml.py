"""cluster.yaml passes Ray's own launcher checks (AWS as written, and the commented `local` provider),
and does what README's "Running on a cluster" promises: GPU workers, the project installed, the token
on every node, MLflow and the dashboard on loopback only, shared storage for trial checkpoints."""
import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "cluster.yaml").read_text()
CONFIG = yaml.safe_load(TEXT)


def prepared(config: dict) -> dict:
    """What `ray up` does before launching anything: fill defaults, then validate against Ray's schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


def commands(*keys: str) -> str:
    return "\n".join(c for k in keys for c in CONFIG.get(k) or [])


def test_the_aws_example_passes_rays_launcher_validation_with_a_cpu_head_and_gpu_workers():
    config = prepared(CONFIG)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "GPU" not in head["resources"]  # no trials on the head
    assert workers and all(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] >= 1 for t in workers)


def test_the_commented_local_provider_passes_validation_when_swapped_in_as_its_comment_says():
    block = TEXT.split("# ---- on-premises")[1]
    uncommented = "\n".join(line[2:] for line in block.splitlines()
                            if line.startswith(("#   ", "# provider:", "# auth:")))
    local = yaml.safe_load(uncommented)
    assert local["provider"]["type"] == "local" and local["provider"]["worker_ips"]
    config = copy.deepcopy(CONFIG)
    config.update(local)
    del config["available_node_types"], config["head_node_type"]
    assert prepared(config)["provider"]["type"] == "local"


def test_every_node_installs_this_checkout_and_runs_with_the_clusters_token():
    mounts = CONFIG["file_mounts"]
    assert mounts["~/clorch"] == "." and mounts["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert ".venv" in CONFIG["rsync_exclude"] and "results" in CONFIG["rsync_exclude"]
    assert "pip install -q -e ~/clorch" in commands("setup_commands")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in CONFIG[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token ray start" in c for c in starts), key


def test_dashboard_and_mlflow_listen_on_loopback_only():
    head = commands("head_start_ray_commands")
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in TEXT
    mlflow = next(c for c in CONFIG["head_start_ray_commands"] if "mlflow server" in c and "nohup" in c)
    assert "--host 127.0.0.1" in mlflow and "--allowed-hosts" in mlflow and "--artifacts-destination" in mlflow
    assert "sqlite:///" in mlflow  # MLflow 3 refuses the old ./mlruns file store


def test_no_broad_process_kills_the_token_is_owner_only_and_mlflow_stays_on_loopback():
    assert "pkill" not in TEXT and "killall" not in TEXT  # a pattern kill hits other users' processes
    head = commands("head_start_ray_commands")
    assert "~/mlflow/server.pid" in head and "echo $! > ~/mlflow/server.pid" in head  # stop what we started
    assert "ray stop" in head and "ray stop" in commands("worker_start_ray_commands")
    assert "chmod 600 ~/.ray/auth_token" in commands("setup_commands")  # every node, after file_mounts
    assert "chmod 600 ~/.ray/auth_token" in TEXT.split("cluster_name:")[0]  # and on the user's machine
    mlflow = [c for c in CONFIG["head_start_ray_commands"] if "mlflow server" in c]
    assert mlflow and all("--host 127.0.0.1" in c for c in mlflow)
    assert "--app-name basic-auth" in TEXT and "MLFLOW_TRACKING_PASSWORD" in TEXT  # the login is documented


@pytest.mark.parametrize("needle", ["/mnt/shared", "ray dashboard cluster.yaml", "clorch submit", "ray down"])
def test_the_header_says_how_to_reach_and_use_the_cluster(needle):
    assert needle in TEXT.split("cluster_name:")[0]
    if needle == "/mnt/shared":
        assert "/mnt/shared" in commands("setup_commands")  # the shared storage is mounted on every node
