"""Kubernetes (MindCluster) manifests: no cluster here, so every generated manifest is
validated offline (kubernetes-validate for the built-in kinds and every pod template,
jsonschema against the AscendJob CRD in ../shared/reference/cluster), and each pod's
container command is run for real with the environment Kubernetes and Ascend Operator
would give it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, TINY_TRAIN_PARAMS

CRD = FIXTURES.parent / "reference" / "cluster" / "ascendjobs.mindxdl.gitee.com.yaml"
K8S_VERSION = "1.29.0"  # the newest schemas kubernetes-validate 1.37.0 ships


def _crd_schema(path: Path) -> dict:
    import yaml

    if not path.is_file():
        pytest.skip(f"CRD {path} is absent (../shared/reference/cluster)")
    crd = yaml.safe_load(path.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _validate_k8s(body: dict) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)


def _pods(body: dict) -> list[dict]:
    """Every pod template of a Job or an AscendJob, as a Pod object."""
    if body["kind"] == "AscendJob":
        templates = [r["template"] for r in body["spec"]["replicaSpecs"].values()]
    else:
        templates = [body["spec"]["template"]]
    return [
        {"apiVersion": "v1", "kind": "Pod", "metadata": t["metadata"], "spec": t["spec"]}
        for t in templates
    ]


def _plan(target, nodes, devices, artifacts, data=None, **params):
    from zoobox.cluster.plan import make_plan

    return make_plan(
        target,
        nodes=nodes,
        devices_per_node=devices,
        artifacts=str(artifacts),
        data=str(data) if data else None,
        backend=params.pop("backend", "auto"),
        params=params,
    )


def _settings(**overrides):
    from zoobox.cluster.k8s import K8sSettings

    return K8sSettings(**dict({"claim": "zoobox-shared"}, **overrides))


def test_training_ascendjob_validates_and_asks_for_what_the_issue_names(tmp_path):
    import jsonschema

    from zoobox.cluster.k8s import manifests
    from zoobox.core.envspec import get_env

    plan = _plan("retinanet.train", 2, 8, tmp_path).seen_from("/artifacts", "/data")
    (item,) = manifests(plan, _settings(registry="registry.example:5000"))
    body = json.loads(json.dumps(item.body))  # plain data, as written to YAML
    jsonschema.validate(body, _crd_schema(CRD))
    for pod in _pods(body):
        _validate_k8s(pod)
    assert body["apiVersion"] == "mindxdl.gitee.com/v1" and body["kind"] == "AscendJob"
    spec = body["spec"]
    assert spec["schedulerName"] == "volcano"
    assert spec["runPolicy"]["schedulingPolicy"]["minAvailable"] == 2
    assert {k: v["replicas"] for k, v in spec["replicaSpecs"].items()} == {"Master": 1, "Worker": 1}
    for replica in spec["replicaSpecs"].values():
        (container,) = replica["template"]["spec"]["containers"]
        assert container["name"] == "ascend"  # MindCluster: do not change
        assert container["image"] == "registry.example:5000/" + get_env("train").image
        resources = container["resources"]
        assert resources["requests"] == resources["limits"] == {"huawei.com/Ascend910": 8}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/usr/local/Ascend/driver"]["readOnly"] is True
        assert "/artifacts" in mounts
        assert container["ports"] == [{"containerPort": 29500, "name": "ascendjob-port"}]
        assert container["args"][-1] == "train" and "command" not in container
        volumes = {v["name"]: v for v in replica["template"]["spec"]["volumes"]}
        assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == "zoobox-shared"
        assert volumes["ascend-driver"]["hostPath"]["path"] == "/usr/local/Ascend/driver"


def test_inference_jobs_validate_one_completion_per_shard(tmp_path):
    from zoobox.cluster.k8s import manifests
    from zoobox.core.envspec import get_env

    plan = _plan("retinaface.all", 2, 4, tmp_path).seen_from("/artifacts", "/data")
    plan.unit_devices = 1
    items = manifests(plan, _settings())
    assert [i.name for i in items] == ["prepare", "shards", "finish"]
    for item in items:
        body = json.loads(json.dumps(item.body))
        _validate_k8s(body)
        for pod in _pods(body):
            _validate_k8s(pod)
    shards = items[1].body["spec"]
    assert shards["completionMode"] == "Indexed"
    assert shards["completions"] == shards["parallelism"] == 8
    (container,) = shards["template"]["spec"]["containers"]
    assert container["image"] == get_env("aie").image
    assert container["resources"]["limits"] == {"huawei.com/Ascend310P": 1}
    assert container["args"][-1] == "shard"
    # prepare: one container per stage before infer, in order, each in its env's image
    pod = items[0].body["spec"]["template"]["spec"]
    steps = pod.get("initContainers", []) + pod["containers"]
    assert [s["args"][s["args"].index("--stage") + 1] for s in steps] == [
        "weights",
        "data",
        "export",
        "compile",
    ]
    assert steps[1]["image"] == get_env("export").image
    assert steps[3]["resources"]["limits"] == {"huawei.com/Ascend310P": 1}
    assert "resources" not in items[2].body["spec"]["template"]["spec"]["containers"][0]


def test_a_broken_manifest_is_refused_by_both_validators(tmp_path):
    """The validators are not vacuous: a wrong field type fails each of them."""
    import jsonschema

    from zoobox.cluster.k8s import manifests

    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    plan = _plan("retinanet.train", 2, 8, tmp_path)
    body = json.loads(json.dumps(manifests(plan, _settings())[0].body))
    body["spec"]["runPolicy"]["schedulingPolicy"]["minAvailable"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, _crd_schema(CRD))
    pod = _pods(body)[0]
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


# -- running the pods' commands here --------------------------------------------------------


def _pod_env(container: dict, extra: dict) -> dict:
    """The environment Kubernetes gives the container: its env list (fieldRefs resolved
    from `extra`), over this machine's."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item["name"] in extra:
            env[item["name"]] = extra[item["name"]]
    env.update(extra)
    return env


def _run_container(container: dict, extra: dict, netns=None, timeout=600):
    argv = list(container["args"])
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.Popen(
        argv,
        cwd=container["workingDir"],
        env=_pod_env(container, extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process, timeout=900):
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def _predictions(folder):
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in sorted((folder / "predictions").rglob("*.txt"))
    }


@pytest.mark.slow
def test_inference_pods_run_here_equal_one_host(tmp_path):
    """prepare's containers in order, the Indexed Job's pods with JOB_COMPLETION_INDEX
    0..N-1, then the finish Job: the metrics equal a one-host run's."""
    from data_scripts.widerface.sample import make_sample
    from zoobox.cluster.k8s import manifests
    from zoobox.cluster.plan import write_plan
    from zoobox.pipeline.configure import build_pipeline, settings_from

    data = tmp_path / "wider"
    make_sample(str(data), events=2, per_event=3)
    params = {"allow_random": True, "input_size": 320}
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
    # The pods see the claim and the dataset where the manifests mount them: here, the
    # same paths as this host (a pod's filesystem is not simulated, its command is real).
    settings = _settings(mount=str(shared), data_mount=str(data), python=sys.executable)
    plan = _plan("retinaface.all", 2, 2, shared, data, backend="torchscript", **params)
    plan = plan.seen_from(settings.mount, settings.data_mount)
    plan.unit_devices = 1
    write_plan(plan)
    prepare, shards, finish = manifests(plan, settings)
    pod = prepare.body["spec"]["template"]["spec"]
    for container in pod.get("initContainers", []) + pod["containers"]:
        _finish(_run_container(container, {"POD_IP": "10.0.0.5"}))
    (container,) = shards.body["spec"]["template"]["spec"]["containers"]
    count = shards.body["spec"]["completions"]
    assert count == 4
    running = [
        _run_container(container, {"JOB_COMPLETION_INDEX": str(i), "ASCEND_VISIBLE_DEVICES": "0"})
        for i in range(count)
    ]
    for process in running:
        _finish(process)
    (container,) = finish.body["spec"]["template"]["spec"]["containers"]
    _finish(_run_container(container, {}))

    infer = shared / "retinaface" / "infer"
    assert _predictions(infer) == _predictions(one_host.stage_dir("infer"))
    assert len(_predictions(infer)) == 6
    metrics = json.loads((shared / "retinaface" / "evaluate" / "metrics.json").read_text())
    assert metrics == json.loads((one_host.stage_dir("evaluate") / "metrics.json").read_text())
    assert json.loads((infer / "timing.json").read_text())["shards"] == 4
    assert (shared / "retinaface" / "report" / "summary.json").is_file()
    # The merged output is recorded as the one-host engine would record it: a one-host
    # run on the same folder, same inputs, finds every stage up to date.
    again = build_pipeline(
        settings_from({"zoobox": {"echo": False}}),
        "retinaface",
        data=str(data),
        artifacts=str(shared),
        runner="host",
        backend="torchscript",
        devices="0",
        params=params,
        dry=True,
    ).run()
    assert {p.name: p.action for p in again.plans} == {
        name: "skip"
        for name in ("weights", "data", "export", "compile", "infer", "evaluate", "report")
    }


TRAIN_PARAMS = TINY_TRAIN_PARAMS


@pytest.fixture
def two_pods():
    """Two network namespaces joined by a veth pair: the Master's and the Worker's pod
    networks ({"names": [...], "addrs": [...]}); deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("making network namespaces needs root")
    tag = f"zk{os.getpid()}"
    names, links = [f"{tag}m", f"{tag}w"], [f"{tag}vm", f"{tag}vw"]
    base = 16 * (1 + os.getpid() % 14)
    addrs = [f"192.0.2.{base + 1}", f"192.0.2.{base + 2}"]

    def ip(*args):
        return subprocess.run(["ip", *args], capture_output=True, text=True)

    try:
        for name in names:
            made = ip("netns", "add", name)
            if made.returncode:
                pytest.skip(f"cannot make a network namespace here: {made.stderr.strip()}")
        steps = [["link", "add", links[0], "type", "veth", "peer", "name", links[1]]]
        for name, link, addr in zip(names, links, addrs):
            steps += [
                ["link", "set", link, "netns", name],
                ["-n", name, "link", "set", "lo", "up"],
                ["-n", name, "addr", "add", f"{addr}/28", "dev", link],
                ["-n", name, "link", "set", link, "up"],
            ]
        for step in steps:
            done = ip(*step)
            assert done.returncode == 0, (step, done.stderr)
        yield {"names": names, "addrs": addrs}
    finally:
        for name in names:
            for pid in ip("netns", "pids", name).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except OSError:
                    pass
            ip("netns", "del", name)


@pytest.mark.slow
def test_ascendjob_pods_run_here_in_two_networks_equal_one_host(two_pods, tmp_path):
    """The AscendJob's Master and Worker containers, each in its own network namespace
    with the variables Ascend Operator injects (MASTER_ADDR = the master's address,
    MASTER_PORT = its ascendjob-port, WORLD_SIZE = NPUs of the job, RANK = node rank) and
    POD_IP: 2 gloo processes each; the model equals a one-host 4-process run's (1e-4)."""
    torch = pytest.importorskip("torch")
    from data_scripts.coco.sample import make_sample
    from tests.conftest import REPO
    from zoobox.cluster.k8s import manifests
    from zoobox.cluster.plan import write_plan

    data = tmp_path / "coco"
    make_sample(str(data), images=4, seed=0)
    one_host = tmp_path / "one-host"
    flags = [f for k, v in TRAIN_PARAMS.items() for f in ("--param", f"{k}={v}")]
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "retinanet.train", "--runner", "host",
         "--artifacts", str(one_host), "--data", str(data), "--devices", "0,1,2,3", *flags],
        cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    shared = tmp_path / "shared"
    settings = _settings(mount=str(shared), data_mount=str(data), python=sys.executable)
    plan = _plan("retinanet.train", 2, 2, shared, data, **TRAIN_PARAMS)
    plan = plan.seen_from(settings.mount, settings.data_mount)
    write_plan(plan)
    (job,) = manifests(plan, settings)
    replicas = job.body["spec"]["replicaSpecs"]
    master = two_pods["addrs"][0]
    running = []
    for rank, (role, netns, addr) in enumerate(
        zip(("Master", "Worker"), two_pods["names"], two_pods["addrs"])
    ):
        (container,) = replicas[role]["template"]["spec"]["containers"]
        port = container["ports"][0]["containerPort"]
        operator = {
            "MASTER_ADDR": master,
            "MASTER_PORT": str(port),
            "WORLD_SIZE": "4",
            "RANK": str(rank),
            "LOCAL_WORLD_SIZE": "2",
            "REPLICA_TYPE": role,
            "POD_IP": addr,
        }
        running.append(_run_container(container, operator, netns=netns))
    outputs = [_finish(process) for process in running]
    assert "training node 1 of 2 (ascend-operator)" in outputs[1], outputs[1]
    summary = json.loads((shared / "retinanet" / "train" / "train.json").read_text())
    assert summary["world_size"] == 4 and summary["ranks_identical"]

    def weights(artifacts):
        return torch.load(str(artifacts / "retinanet" / "train" / "model_final.pth"))

    got, want = weights(shared), weights(one_host)
    assert got.keys() == want.keys()
    for key in want:
        a, b = got[key].double(), want[key].double()
        scale = b.abs().max().clamp(min=1e-12)
        assert float((a - b).abs().max() / scale) <= 1e-4, key
