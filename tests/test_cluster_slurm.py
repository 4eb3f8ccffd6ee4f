"""Cluster runs through a real Slurm: munged, slurmctld and two slurmd on this machine,
each daemon in its own network and UTS namespace (tests/slurm_cluster.py).

`invoke cluster.slurm` writes the batch scripts and submits them with sbatch; the jobs
run on both nodes; the results equal a one-host run's.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_TRAIN_PARAMS
from tests.slurm_cluster import NODES, SlurmCluster, missing_tools

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"Slurm test cluster needs {', '.join(missing)} (apt-get install slurm-wlm munge)"
        )
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        pytest.skip("network namespaces are not available here (ip netns)")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _invoke(cluster, *args, timeout=120):
    env = cluster.env()
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        cluster.client([sys.executable, "-m", "invoke", *args]),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _job_ids(output: str) -> list[str]:
    return [
        line.split("job ")[1].split()[0]
        for line in output.splitlines()
        if line.startswith("submitted ")
    ]


def _predictions(folder):
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in sorted((folder / "predictions").rglob("*.txt"))
    }


def test_retinaface_inference_sharded_over_both_nodes_equals_one_host(
    cluster, tmp_path, monkeypatch
):
    from data_scripts.widerface.sample import make_sample
    from zoobox.pipeline.configure import build_pipeline, settings_from

    data = tmp_path / "wider"
    make_sample(str(data), events=2, per_event=3)
    params = {"allow_random": True, "input_size": 320}
    # One torch thread here as on the nodes (_invoke): with random weights NMS meets
    # near-equal scores, and another thread count sums the convolutions in another order.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one_host = build_pipeline(
        settings_from({"zoobox": {"echo": False}}),
        "retinaface",
        data=str(data),
        artifacts=str(tmp_path / "one-host"),
        runner="host",
        backend="torchscript",
        devices="0",
        params=params,
    ).run()

    shared = tmp_path / "shared"
    done = _invoke(
        cluster,
        "cluster.slurm", "retinaface.all", "--nodes", "2", "--devices-per-node", "2",
        "--artifacts", str(shared), "--data", str(data), "--backend", "torchscript",
        "--random-init", "--param", "input_size=320",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ids = _job_ids(done.stdout)
    assert len(ids) == 3, done.stdout
    cluster.wait_job(",".join(ids), timeout=900)
    run_dir = next((shared / "retinaface" / "cluster").iterdir())
    logs = "\n".join(p.read_text() for p in sorted((run_dir / "logs").glob("*.out")))
    infer = shared / "retinaface" / "infer"
    assert (shared / "retinaface" / "report" / "summary.json").is_file(), logs + cluster.logs()
    # The shards ran as an array, one task per node: each node's log names its shards.
    array_logs = sorted((run_dir / "logs").glob("shards-*.out"))
    assert len(array_logs) == 2, logs
    hosts = set()
    for log in array_logs:
        text = log.read_text()
        hosts.update(node for node in NODES if f"on {node}" in text)
    assert hosts == set(NODES), logs
    assert _predictions(infer) == _predictions(one_host.stage_dir("infer"))
    assert len(_predictions(infer)) == 6
    metrics = json.loads((shared / "retinaface" / "evaluate" / "metrics.json").read_text())
    expected = json.loads((one_host.stage_dir("evaluate") / "metrics.json").read_text())
    assert metrics == expected
    timing = json.loads((infer / "timing.json").read_text())
    assert timing["shards"] == 4 and timing["images"] == 6


TRAIN_PARAMS = TINY_TRAIN_PARAMS


def _param_flags(params):
    flags = []
    for key, value in params.items():
        flags += ["--param", f"{key}={value}"]
    return flags


def _weights(artifacts):
    import torch

    return torch.load(str(artifacts / "retinanet" / "train" / "model_final.pth"))


def test_retinanet_training_on_two_nodes_equals_one_host_four_processes(cluster, tmp_path):
    """`invoke cluster.slurm retinanet.train --nodes 2 --devices-per-node 2`: srun starts
    one zoobox training node per host, 2 gloo processes each; the model equals a one-host
    4-process run's within 1e-4 (relative to each tensor's largest value)."""
    pytest.importorskip("torch")
    from data_scripts.coco.sample import make_sample

    data = tmp_path / "coco"
    make_sample(str(data), images=4, seed=0)
    env = dict(cluster.env(), OMP_NUM_THREADS="1")
    one_host = tmp_path / "one-host"
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "retinanet.train", "--runner", "host",
         "--artifacts", str(one_host), "--data", str(data), "--devices", "0,1,2,3",
         *_param_flags(TRAIN_PARAMS)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    shared = tmp_path / "shared"
    done = _invoke(
        cluster,
        "cluster.slurm", "retinanet.train", "--nodes", "2", "--devices-per-node", "2",
        "--artifacts", str(shared), "--data", str(data), *_param_flags(TRAIN_PARAMS),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (job,) = _job_ids(done.stdout)
    cluster.wait_job(job, timeout=900)
    run_dir = next((shared / "retinanet" / "cluster").iterdir())
    log = "\n".join(p.read_text() for p in sorted((run_dir / "logs").glob("*.out")))
    assert (shared / "retinanet" / "train" / "model_final.pth").is_file(), log + cluster.logs()
    # Both hosts took part, each as the node Slurm numbered it.
    for rank in (0, 1):
        assert f"training node {rank} of 2 (slurm)" in log, log
    summary = json.loads((shared / "retinanet" / "train" / "train.json").read_text())
    assert summary["world_size"] == 4 and summary["ranks_identical"]
    got, want = _weights(shared), _weights(one_host)
    assert got.keys() == want.keys()
    for key in want:
        a, b = got[key].double(), want[key].double()
        scale = b.abs().max().clamp(min=1e-12)
        assert float((a - b).abs().max() / scale) <= 1e-4, key
