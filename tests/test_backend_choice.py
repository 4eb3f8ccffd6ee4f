"""`--backend auto` on a CPU: the fastest of a recipe's CPU backends, measured once, cached."""

import copy
import json

import pytest

from zoobox.core.errors import UserError
from zoobox.core.recipe import check_recipe, load_recipe
from zoobox.hosts.detect import ContainerEngine, NpuHost
from zoobox.pipeline import speed
from zoobox.pipeline.choice import choose

NO_ENGINE = ContainerEngine(False, "not probed")
BACKENDS = {"npu": "aie", "cpu": ["onnxruntime", "torchscript"]}


def test_choose_asks_for_the_fastest_cpu_backend_on_the_host():
    asked = []

    def pick(candidates):
        asked.append(candidates)
        return "onnxruntime", "fastest CPU backend here: onnxruntime 4.00 vs torchscript 1.00"

    npu = NpuHost(devices=[])
    choice = choose(BACKENDS, "auto", "auto", "0", NO_ENGINE, npu, pick_cpu=pick)
    assert (choice.runner, choice.backend) == ("host", "onnxruntime")
    assert asked == [["onnxruntime", "torchscript"]]
    assert "fastest CPU backend here: onnxruntime 4.00" in choice.line
    assert choice.line.startswith("runner host, backend onnxruntime on cpu: no NPU devices")
    # Not on the host runner (its interpreter is not the one measured): the first listed.
    choice = choose(BACKENDS, "venv", "auto", "0", NO_ENGINE, npu, pick_cpu=pick)
    assert choice.backend == "onnxruntime" and "first CPU backend (venv runner)" in choice.line
    assert len(asked) == 1
    # Forced, or a single CPU backend: nothing measured.
    assert choose(BACKENDS, "auto", "torchscript", "0", NO_ENGINE, npu, pick_cpu=pick).backend == (
        "torchscript"
    )
    single = {"npu": "aie", "cpu": "torchscript"}
    assert choose(single, "auto", "auto", "0", NO_ENGINE, npu, pick_cpu=pick).backend == (
        "torchscript"
    )
    assert len(asked) == 1
    with pytest.raises(UserError, match="use --backend onnxruntime to run on the CPU"):
        choose(BACKENDS, "host", "aie", "0", NO_ENGINE, npu)


def test_measured_once_then_cached(tmp_path, monkeypatch):
    calls = []

    def measure(recipe, backends):
        calls.append((recipe, backends))
        return {
            "shape": [1, 3, 1000, 1000],
            "images_per_s": {"onnxruntime": 5.5, "torchscript": 1.1},
        }

    monkeypatch.setattr(speed, "installed", lambda backend: True)
    name, why = speed.fastest_cpu_backend(
        "retinaface", ["torchscript", "onnxruntime"], tmp_path, measure=measure
    )
    assert name == "onnxruntime" and "onnxruntime 5.50 vs torchscript 1.10" in why
    assert "measured now" in why
    name, why = speed.fastest_cpu_backend(
        "retinaface", ["torchscript", "onnxruntime"], tmp_path, measure=measure
    )
    assert name == "onnxruntime" and "cached" in why and len(calls) == 1
    stored = json.loads((tmp_path / speed.CACHE_FILE).read_text())
    (key,) = stored
    assert key.startswith("retinaface|torchscript,onnxruntime|")
    # Another recipe, or other versions, measure again; a dry run never measures.
    name, why = speed.fastest_cpu_backend(
        "other", ["torchscript", "onnxruntime"], tmp_path, dry=True, measure=measure
    )
    assert name == "torchscript" and "not measured yet" in why and len(calls) == 1


def test_what_cannot_be_measured_takes_the_first_installed(tmp_path, monkeypatch):
    def broken(recipe, backends):
        raise RuntimeError("probe died")

    monkeypatch.setattr(speed, "installed", lambda backend: backend == "torchscript")
    name, why = speed.fastest_cpu_backend(
        "retinaface", ["onnxruntime", "torchscript"], tmp_path, measure=broken
    )
    assert name == "torchscript" and "the only one" in why
    monkeypatch.setattr(speed, "installed", lambda backend: True)
    name, why = speed.fastest_cpu_backend(
        "retinaface", ["onnxruntime", "torchscript"], tmp_path, measure=broken
    )
    assert name == "onnxruntime" and "measuring failed: probe died" in why
    assert not (tmp_path / speed.CACHE_FILE).exists()


def test_recipe_may_list_cpu_backends_but_only_real_ones():
    recipe = load_recipe("retinaface")
    assert recipe.backends["cpu"] == ["onnxruntime", "torchscript"]
    broken = copy.copy(recipe)  # the loaded recipe is cached: never change it
    broken.backends = dict(recipe.backends, cpu=["onnxruntime", "tensorrt"])
    with pytest.raises(UserError, match=r"backends\.cpu: unknown backend 'tensorrt'"):
        check_recipe(broken)


@pytest.mark.slow
def test_probe_times_each_backend_on_the_recipes_network(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import models.retinaface.probe as probe_module
    from models.retinaface.net import build_model
    from zoostage.backends import probe

    monkeypatch.setattr(probe_module, "probe_model", lambda: (build_model(None), (1, 3, 64, 64)))
    result = probe.measure("models.retinaface.probe", ["onnxruntime", "torchscript"], calls=1)
    assert result["shape"] == [1, 3, 64, 64]
    assert set(result["images_per_s"]) == {"onnxruntime", "torchscript"}
    assert all(v > 0 for v in result["images_per_s"].values())
    with pytest.raises(UserError, match="module under models"):
        probe.measure("os", ["torchscript"])
