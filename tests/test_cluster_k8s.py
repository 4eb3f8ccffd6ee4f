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

from tests.conftest import FIXTURES

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
    from zoobox.run.session import build_engine, settings_from

    data = tmp_path / "wider"
    make_sample(str(data), events=2, per_event=3)
    params = {"allow_random": True, "input_size": 320}
    one_host = build_engine(
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
