"""RetinaNet training across hosts (issue 22), as the seed's train_performance_multinodes.sh.

First the pieces by hand: which flag or scheduler variable wins (nodes.resolve), the
local address -> interface lookup and its refusal, the seed's per-rank core ranges, the
handshake (agreement, the resume file sent to a node that lacks it, an unreachable
master). Then, as root with `ip`, two hosts made of two Linux network namespaces joined
by a veth pair (192.0.2.1 and 192.0.2.2, the documentation range: nothing outside them is
addressed), each running `invoke retinanet.train` with 2 gloo processes on a generated
COCO sample and a random init: the model equals a one-host 4-process run's; resume with
and without a shared work folder; kill -9 of one host; a mismatched --batch-size; a
master that never answers. Namespace names carry the pid; they are always deleted.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from models.retinanet.train import handshake
from models.retinanet.train import nodes as nodes_lib
from tests import netns
from tests.conftest import REPO, TINY_TRAIN_PARAMS, stage_env
from zoostage.errors import USER_ERROR_EXIT, UserError


# -- which value wins ---------------------------------------------------------------------------
def test_flags_win_then_the_schedulers_variables_then_defaults():
    env = {"MASTER_ADDR": "192.0.2.9", "MASTER_PORT": "2222", "WORLD_SIZE": "16",
           "RANK": "1", "LOCAL_ADDR": "127.0.0.1"}  # fmt: skip
    # Ascend Operator: WORLD_SIZE counts processes (NPUs), RANK is the pod's node rank.
    got = nodes_lib.resolve(nproc=8, environ=env)
    assert (got.nnodes, got.node_rank, got.master_addr, got.master_port) == (
        2,
        1,
        "192.0.2.9",
        2222,
    )
    assert got.local_addr == "127.0.0.1" and got.interface == "lo"
    assert got.sources["nnodes"] == "WORLD_SIZE 16 / 8 processes per node"
    assert got.sources["node_rank"] == "RANK"
    flags = nodes_lib.resolve(4, 3, "127.0.0.1", 29600, "127.0.0.1", nproc=8, environ=env)
    assert (flags.nnodes, flags.node_rank, flags.master_addr, flags.master_port) == (
        4, 3, "127.0.0.1", 29600)  # fmt: skip
    assert flags.sources == {}
    # NNODES and NODE_RANK before WORLD_SIZE and RANK; Slurm's names after them.
    both = dict(env, NNODES="4", NODE_RANK="3")
    assert nodes_lib.resolve(nproc=8, environ=both)[:2] == (4, 3)
    slurm = {"SLURM_NNODES": "3", "SLURM_NODEID": "2", "MASTER_ADDR": "127.0.0.1"}
    assert nodes_lib.resolve(nproc=1, environ=slurm)[:2] == (3, 2)
    # Nothing set: one node, the default port.
    alone = nodes_lib.resolve(nproc=2, environ={})
    assert alone[:5] == (1, 0, None, 29500, None)


def test_scheduler_variables_that_do_not_fit_are_one_line_each():
    cases = [
        ({"WORLD_SIZE": "12"}, 8, "cannot be split into nodes of 8"),
        ({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "4"}, 8, "LOCAL_WORLD_SIZE=4 but --devices"),
        ({"NNODES": "two"}, 1, "NNODES='two' is not a whole number"),
        ({"NNODES": "2", "RANK": "2", "MASTER_ADDR": "x"}, 1, "node_rank from RANK"),
        ({"NNODES": "2"}, 1, "needs --master-addr"),
    ]
    for env, nproc, words in cases:
        with pytest.raises(UserError, match=words.replace("(", r"\(")):
            nodes_lib.resolve(nproc=nproc, environ=env)


def test_the_local_address_must_be_held_by_an_interface_here():
    table = [("lo", "127.0.0.1"), ("eth0", "192.0.2.5"), ("eth0", "fe80::1"), ("ib0", "::2")]
    assert nodes_lib.interface_of("192.0.2.5", table) == "eth0"
    assert nodes_lib.interface_of("0:0::2", table) == "ib0"  # compared as addresses
    with pytest.raises(UserError) as refused:
        nodes_lib.interface_of("192.0.2.6", table)
    assert "--local-addr 192.0.2.6 is not held by any interface" in str(refused.value)
    assert "eth0 192.0.2.5" in str(refused.value) and "fe80" not in str(refused.value)
    with pytest.raises(UserError, match="not an IP address"):
        nodes_lib.interface_of("host-a", table)
    # This host's own table (getifaddrs) has the loopback.
    assert ("lo", "127.0.0.1") in nodes_lib.interface_addresses()
    # The route to a master on this host leaves from a loopback address.
    assert nodes_lib.route_source("127.0.0.1", 29500).startswith("127.")


def test_gloo_and_hccl_are_told_the_interface_and_the_address():
    nodes = nodes_lib.Nodes(2, 1, "192.0.2.1", 29500, "192.0.2.2", "veth1", {})
    assert nodes_lib.worker_environment(nodes, 300, {}) == {
        "GLOO_SOCKET_IFNAME": "veth1", "HCCL_IF_IP": "192.0.2.2", "HCCL_CONNECT_TIMEOUT": "300",
    }  # fmt: skip
    # HCCL_CONNECT_TIMEOUT within CANN's [120, 7200]; one already set is kept.
    assert nodes_lib.worker_environment(nodes, 3, {})["HCCL_CONNECT_TIMEOUT"] == "120"
    assert nodes_lib.worker_environment(nodes, 9000, {})["HCCL_CONNECT_TIMEOUT"] == "7200"
    given = nodes_lib.worker_environment(nodes, 300, {"HCCL_CONNECT_TIMEOUT": "600"})
    assert "HCCL_CONNECT_TIMEOUT" not in given
    alone = nodes_lib.Nodes(1, 0, None, 29500, None, None, {})
    assert nodes_lib.worker_environment(alone, 300, {}) == {}


def test_per_rank_cores_as_the_seeds_taskset():
    """train_performance_8p.sh on aarch64: KERNEL_NUM=$(($(nproc)/8)), rank r gets
    taskset -c KERNEL_NUM*r-(KERNEL_NUM*r+KERNEL_NUM-1): 192 cores -> 0-23, 24-47, ..."""
    ranges = nodes_lib.cpu_ranges(range(192), 8)
    assert [nodes_lib.range_text(r) for r in ranges[:2]] == ["0-23", "24-47"]
    assert nodes_lib.range_text(ranges[7]) == "168-191"
    # The cores this process may use, whatever their ids; leftovers stay unused as the seed's.
    assert nodes_lib.cpu_ranges([2, 3, 5, 7, 8], 2) == [[2, 3], [5, 7]]
    assert nodes_lib.cpu_ranges([0, 1], 4) is None  # fewer cores than processes: none
    assert nodes_lib.range_text([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert nodes_lib.resolve_cpu_bind("auto", npu_host=True) is True
    assert nodes_lib.resolve_cpu_bind("auto", npu_host=False) is False
    assert nodes_lib.resolve_cpu_bind("on", npu_host=False) is True
    with pytest.raises(UserError):
        nodes_lib.resolve_cpu_bind("sometimes", False)


def test_a_rank_binds_itself_to_its_range_and_says_so():
    """What the worker does with cpu_bind on (a child process: affinity is per process)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one usable core here: nothing to split")
    code = (
        "import os; from models.retinanet.train import worker; worker.bind_cores(1, 2, 3); "
        "print(sorted(os.sched_getaffinity(0)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=str(REPO), env=stage_env(), stdout=subprocess.PIPE,
        universal_newlines=True, timeout=120,
    )  # fmt: skip
    share = len(cores) // 2
    want = cores[share : 2 * share]
    assert done.stdout.splitlines() == [
        "rank 3 bound to cores %s" % nodes_lib.range_text(want),
        str(want),
    ]


# -- the handshake, in one process over the loopback ---------------------------------------------
def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _facts(node_rank, batch=1, dataset="d" * 64, lr=0.01):
    config = {"batch_size": batch, "lr": lr, "epochs": 12, "out": "/o%d" % node_rank,
              "devices": [0, 1], "dataset": {"images": 4}}  # fmt: skip
    return handshake.facts(config, 2, 2, node_rank, "c" * 64, dataset)


def _handshake(tmp_path, mine, theirs, checkpoint_bytes=None, peer_has=None):
    """Node 0 and node 1 over 127.0.0.1; (node 0's outcome, node 1's outcome)."""
    port = _free_port()
    nodes0 = nodes_lib.Nodes(2, 0, "127.0.0.1", port, "127.0.0.1", "lo", {})
    nodes1 = nodes0._replace(node_rank=1)
    work0, work1 = tmp_path / "w0", tmp_path / "w1"
    work0.mkdir(parents=True)
    work1.mkdir(parents=True)
    checkpoint = {"name": None}
    if checkpoint_bytes is not None:
        (work0 / "iter_0000004.pth").write_bytes(checkpoint_bytes)
        checkpoint = handshake.describe_checkpoint(str(work0 / "iter_0000004.pth"), 4)
        if peer_has is not None:
            (work1 / "iter_0000004.pth").write_bytes(peer_has)
    outcome = {}
    master = handshake.Master(nodes0, 20).open()

    def node0():
        try:
            master.agree(mine, checkpoint, str(work0))
            outcome[0] = "ok"
        except UserError as error:
            outcome[0] = error

    thread = threading.Thread(target=node0)
    thread.start()
    said = []
    try:
        outcome[1] = handshake.join(nodes1, theirs, str(work1), 20, said.append)
    except UserError as error:
        outcome[1] = error
    thread.join(30)
    return outcome, work1, said


def test_handshake_agrees_and_sends_the_checkpoint_a_node_lacks(tmp_path):
    payload = os.urandom(3 * handshake.CHUNK + 5)
    outcome, work1, said = _handshake(tmp_path, _facts(0), _facts(1), payload)
    assert outcome[0] == "ok" and outcome[1]["name"] == "iter_0000004.pth"
    assert (work1 / "iter_0000004.pth").read_bytes() == payload
    assert said == ["receiving iter_0000004.pth (%d bytes) from node 0" % len(payload)]
    assert not [p for p in os.listdir(str(work1)) if ".tmp-" in p]


def test_a_node_with_a_different_file_of_that_name_gets_node_0s(tmp_path):
    payload = b"node 0's checkpoint"
    outcome, work1, said = _handshake(tmp_path, _facts(0), _facts(1), payload, b"stale")
    assert (work1 / "iter_0000004.pth").read_bytes() == payload and said


def test_a_node_with_the_same_file_receives_nothing(tmp_path):
    payload = b"the same checkpoint"
    outcome, work1, said = _handshake(tmp_path, _facts(0), _facts(1), payload, payload)
    assert outcome[0] == "ok" and outcome[1]["iteration"] == 4 and said == []


def test_a_difference_stops_both_naming_the_item_and_the_node(tmp_path):
    outcome, _, _ = _handshake(tmp_path, _facts(0), _facts(1, batch=2))
    for side in (0, 1):
        text = str(outcome[side])
        assert text.startswith("node 1 differs from node 0 in global batch 8 = 2 per process")
        assert "(node 0: 4 = 1 x 2 x 2)" in text
    outcome, _, _ = _handshake(tmp_path / "b", _facts(0), _facts(1, dataset="e" * 64, lr=0.02))
    text = str(outcome[1])
    assert "config fingerprint: lr 0.02 (node 0: 0.01)" in text
    assert "dataset fingerprint eeeeeeeeeeee, 4 images (node 0: dddddddddddd" in text
    assert str(outcome[0]) == text


def test_an_unreachable_master_is_one_line_naming_address_and_port():
    nodes = nodes_lib.Nodes(2, 1, "127.0.0.1", _free_port(), "127.0.0.1", "lo", {})
    started = time.time()
    with pytest.raises(UserError) as error:
        handshake.join(nodes, _facts(1), "/nonexistent", 1.5, print)
    assert "cannot reach the master at 127.0.0.1 port %d" % nodes.master_port in str(error.value)
    assert "within 1.5 s" in str(error.value) and time.time() - started < 30


def test_launch_refuses_a_local_address_no_interface_holds(tmp_path):
    """Before anything starts: no config written, no dataset read, no work folder."""
    result = subprocess.run(
        [sys.executable, "-m", "models.retinanet.train.launch", "--out", str(tmp_path / "o"),
         "--data", str(tmp_path / "no-coco"), "--work-dir", str(tmp_path / "w"),
         "--nnodes", "2", "--node-rank", "1", "--master-addr", "192.0.2.1",
         "--local-addr", "192.0.2.77"],
        cwd=str(REPO), env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == USER_ERROR_EXIT, result.stderr
    assert result.stderr.startswith("error: --local-addr 192.0.2.77 is not held by any")
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "w").exists() and not (tmp_path / "o" / "train_config.json").exists()


# -- two hosts made of network namespaces ---------------------------------------------------------
MASTER = netns.ADDRESSES[0]
PARAMS = dict(TINY_TRAIN_PARAMS, epochs=8, connect_timeout=120)  # 8 steps in all


@pytest.fixture
def hosts():
    """Two namespaces joined by a veth pair (tests/netns.py), deleted afterwards."""
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    try:
        with netns.two_hosts() as made:
            yield made
    except RuntimeError as error:
        if "cannot make a network namespace" in str(error):
            pytest.skip(str(error))
        raise


def _invoke_argv(artifacts, data, devices, params, *extra):
    argv = [sys.executable, "-m", "invoke", "retinanet.train", "--runner", "host",
            "--artifacts", str(artifacts), "--data", str(data), "--devices", devices]  # fmt: skip
    for key, value in params.items():
        argv += ["--param", "%s=%s" % (key, value)]
    return argv + [str(a) for a in extra]


def _start(argv, namespace=None):
    if namespace:
        argv = ["ip", "netns", "exec", namespace, *argv]
    env = stage_env()
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        argv, cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True, start_new_session=True,
    )  # fmt: skip


def _finish(process, timeout=900):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError("no end within %d s:\n%s" % (timeout, output[-4000:])) from None
    return process.returncode, output


def _node_argv(hosts, rank, artifacts, data, params, *extra):
    return _invoke_argv(
        artifacts, data, "0,1", params, "--nnodes", 2, "--node-rank", rank,
        "--master-addr", MASTER, "--local-addr", hosts["addrs"][rank], *extra,
    )  # fmt: skip


def two_hosts(hosts, artifacts, data, params, *extra):
    """Both nodes at once; [(exit code, output)] for node 0 and node 1."""
    started = [
        _start(_node_argv(hosts, rank, artifacts[rank], data, params, *extra), hosts["names"][rank])
        for rank in (0, 1)
    ]
    return [_finish(p) for p in started]


def _weights(artifacts):
    import torch

    return torch.load(str(artifacts / "retinanet" / "train" / "model_final.pth"))


def _assert_close(got, want, rtol=1e-4, atol=1e-6):
    """The state dicts agree within `rtol` relative: as a whole (L2), and element by
    element with torch.allclose (`atol` for the entries near 0: biases that started at 0
    hold ~1e-5 after a few warm-up steps, where float32 sums in another order differ by
    ~1e-8)."""
    import torch

    assert got.keys() == want.keys()
    diff = sum(float((got[k].double() - want[k].double()).norm() ** 2) for k in want) ** 0.5
    norm = sum(float(want[k].double().norm() ** 2) for k in want) ** 0.5
    assert diff <= rtol * norm, (diff, norm)
    for key in want:
        assert torch.allclose(got[key].double(), want[key].double(), rtol=rtol, atol=atol), key
    return diff


def _moved(artifacts, final):
    """How far (L2) training moved the weights from iteration 2 to the end: the scale the
    equality tolerance is set against."""
    from models.retinanet.train import checkpoints

    path = artifacts / "retinanet" / "work" / "train" / "iter_0000002.pth"
    state = checkpoints.read_checkpoint(str(path))["model"]
    return sum(float((final[k].double() - state[k].double()).norm() ** 2) for k in final) ** 0.5


def _summary(artifacts):
    return json.loads((artifacts / "retinanet" / "train" / "train.json").read_text())


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    from data_scripts.coco.sample import make_sample

    root = tmp_path_factory.mktemp("coco4")
    make_sample(str(root), images=4, seed=0)
    return root


@pytest.fixture(scope="module")
def one_host(coco, tmp_path_factory):
    """The reference: one host, 4 gloo processes, same global batch (4) and seed."""
    artifacts = tmp_path_factory.mktemp("one-host")
    code, output = _finish(
        _start(_invoke_argv(artifacts, coco, "0,1,2,3", dict(PARAMS, max_iters=4)))
    )
    assert code == 0, output[-4000:]
    weights = _weights(artifacts)
    return {"weights": weights, "summary": _summary(artifacts), "moved": _moved(artifacts, weights)}


def _ok(results):
    for rank, (code, output) in enumerate(results):
        assert code == 0, "node %d:\n%s" % (rank, output[-4000:])


@pytest.mark.slow
def test_two_hosts_equal_one_host_and_resume_without_shared_storage(
    hosts, coco, one_host, tmp_path
):
    """2 hosts x 2 processes, each with its own artifacts: stopped at 2, node 1's work
    folder removed, both rerun: both continue at 2 (node 1 receives node 0's checkpoint)
    and the model equals the one-host run's."""
    artifacts = [tmp_path / "host0", tmp_path / "host1"]
    _ok(two_hosts(hosts, artifacts, coco, dict(PARAMS, max_iters=2)))
    work1 = artifacts[1] / "retinanet" / "work" / "train"
    assert not [n for n in os.listdir(str(work1)) if n.endswith(".pth")]  # node 0 writes them
    shutil.rmtree(str(artifacts[1] / "retinanet" / "work"))
    results = two_hosts(hosts, artifacts, coco, dict(PARAMS, max_iters=4))
    _ok(results)
    assert "receiving iter_0000002.pth" in results[1][1]
    assert "resuming from" in results[0][1] and "at iteration 2" in results[0][1]
    summary = _summary(artifacts[0])
    assert summary["world_size"] == 4 and summary["global_batch"] == 4
    assert summary["resumed_from"]["iteration"] == 2 and summary["iterations"] == 4
    assert summary["ranks_identical"] and len(summary["rank_weight_digests"]) == 4
    diff = _assert_close(_weights(artifacts[0]), one_host["weights"])
    assert diff < 1e-2 * one_host["moved"]  # far below what 2 iterations change
    curve = [e["loss"] for e in summary["loss_curve"]]
    want = [e["loss"] for e in one_host["summary"]["loss_curve"]]
    assert curve == pytest.approx(want, rel=1e-4)


@pytest.mark.slow
def test_two_hosts_with_a_shared_work_folder_resume_alike(hosts, coco, one_host, tmp_path):
    """One work folder for both (each host keeps its artifacts folder, whose lock is its
    own): nothing is sent, both continue from the same file, same model."""
    shared = tmp_path / "shared-work"
    shared.mkdir()
    artifacts = [tmp_path / "host0", tmp_path / "host1"]
    for folder in artifacts:
        (folder / "retinanet").mkdir(parents=True)
        os.symlink(str(shared), str(folder / "retinanet" / "work"))
    _ok(two_hosts(hosts, artifacts, coco, dict(PARAMS, max_iters=2)))
    results = two_hosts(hosts, artifacts, coco, dict(PARAMS, max_iters=4))
    _ok(results)
    assert "receiving" not in results[1][1]
    assert _summary(artifacts[0])["resumed_from"]["iteration"] == 2
    _assert_close(_weights(artifacts[0]), one_host["weights"])


def _error_lines(output):
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_kill_9_of_one_host_stops_the_other_and_the_same_commands_resume(hosts, coco, tmp_path):
    artifacts = [tmp_path / "host0", tmp_path / "host1"]
    params = dict(PARAMS, max_iters=40, checkpoint_every=1)
    started = [
        _start(_node_argv(hosts, rank, artifacts[rank], coco, params), hosts["names"][rank])
        for rank in (0, 1)
    ]
    work0 = artifacts[0] / "retinanet" / "work" / "train"
    deadline = time.time() + 600
    while not list(work0.glob("iter_0000002.pth")):
        assert time.time() < deadline and started[0].poll() is None, "no checkpoint"
        time.sleep(0.2)
    netns.kill_all(hosts["names"][1])  # the host dies: every process in it at once
    killed = time.time()
    code, output = _finish(started[0], timeout=300)  # the bound: docs/multihost.md
    started[1].communicate()
    stopped = time.time() - killed
    print("node 0 stopped %.1f s after the kill" % stopped)  # pytest -s shows it
    assert code != 0 and stopped < 300
    lines = _error_lines(output)
    assert len(lines) == 1, output[-4000:]
    assert "lost the connection to another node" in lines[0] or "failed" in lines[0], lines
    # The same commands again: both continue from node 0's last complete checkpoint.
    from models.retinanet.train import checkpoints

    _, state = checkpoints.load_latest(str(work0))
    last = state["iteration"]
    results = two_hosts(hosts, artifacts, coco, dict(params, max_iters=last + 1))
    _ok(results)
    assert "at iteration %d" % last in results[0][1]
    assert _summary(artifacts[0])["resumed_from"]["iteration"] == last


@pytest.mark.slow
def test_a_different_batch_size_stops_both_with_one_line(hosts, coco, tmp_path):
    artifacts = [tmp_path / "host0", tmp_path / "host1"]
    started = [
        _start(_node_argv(hosts, 0, artifacts[0], coco, PARAMS), hosts["names"][0]),
        _start(
            _node_argv(hosts, 1, artifacts[1], coco, dict(PARAMS, train_batch_size=2)),
            hosts["names"][1],
        ),
    ]
    for rank, process in enumerate(started):
        code, output = _finish(process, timeout=300)
        assert code != 0
        lines = _error_lines(output)
        assert len(lines) == 1, (rank, output[-3000:])
        want = "node 1 differs from node 0 in global batch 8 = 2 per process x 2 processes"
        assert want + " x 2 nodes (node 0: 4 = 1 x 2 x 2)" in lines[0]
        assert not (artifacts[rank] / "retinanet" / "train").exists()


@pytest.mark.slow
def test_a_master_that_never_answers_is_one_line(hosts, coco, tmp_path):
    params = dict(PARAMS, connect_timeout=3)
    code, output = _finish(
        _start(_node_argv(hosts, 1, tmp_path / "host1", coco, params), hosts["names"][1]),
        timeout=300,
    )
    lines = _error_lines(output)
    assert code != 0 and len(lines) == 1, output[-3000:]
    assert "cannot reach the master at 192.0.2.1 port 29500 from 192.0.2.2 within 3 s" in lines[0]
