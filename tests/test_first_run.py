"""A first run on a real Ascend host (issue 20): each place where the NPU path, read against
the Ascend tools' documented behaviour, would stumble; checked against fakes that follow
the tools' interfaces (every shape the releases document). docs/first-run.md lists them."""

import os
import sys

import numpy as np
import pytest

from tests.conftest import REPO

FAKES = REPO / "tests" / "fakes"


# -- 1. ais_bench's exec_time_list: milliseconds (older), (start, end) pairs (newer) -----------
@pytest.fixture
def fake_ais_bench(monkeypatch):
    """tests/fakes' ais_bench importable in this process (and forgotten afterwards)."""
    monkeypatch.syspath_prepend(str(FAKES))
    for name in [m for m in sys.modules if m == "ais_bench" or m.startswith("ais_bench.")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [m for m in sys.modules if m == "ais_bench" or m.startswith("ais_bench.")]:
        sys.modules.pop(name, None)


def test_exec_time_entries_of_each_release_hand_computed():
    from zoostage.backends.om import exec_time_seconds

    assert exec_time_seconds(12.5) == pytest.approx(0.0125)  # milliseconds
    assert exec_time_seconds(np.float32(2.0)) == pytest.approx(0.002)
    assert exec_time_seconds((1000.0, 1012.5)) == pytest.approx(0.0125)  # (start, end)
    assert exec_time_seconds([3, 5]) == pytest.approx(0.002)
    for odd in ("12.5", (1, 2, 3), (5.0, 1.0), {"ms": 1}, None, float("nan"), -1.0, True):
        assert exec_time_seconds(odd) is None, odd


@pytest.mark.parametrize(
    "shape, source",
    [
        ("ms", "backend"),
        ("pairs", "backend"),
        ("sumary", "backend"),
        ("none", "harness"),
        ("odd", "harness"),
    ],
)
def test_the_om_backend_takes_every_exec_time_shape_or_falls_back_with_a_note(
    shape, source, tmp_path, monkeypatch, fake_ais_bench
):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tests.fakes.ais_bench.infer.interface import EXEC_MS
    from zoostage.backends import get_backend
    from zoostage.backends.harness import infer_store
    from zoostage.smoke.atc import SHAPE, conv_onnx

    monkeypatch.setenv("FAKE_AIS_BENCH_SUMMARY", shape)
    conv_onnx(str(tmp_path / "m.onnx"))
    (tmp_path / "m.om").touch()
    backend = get_backend("om", device=0).load(str(tmp_path / "m.om"))

    class Store:  # two images of the conv's input shape
        def __len__(self):
            return 2

        def batch(self, indices):
            return np.zeros((len(indices), *SHAPE[1:]), np.float32)

        def batches(self, size, order):
            for start in range(0, len(order), size):
                chosen = order[start : start + size]
                yield chosen, self.batch(chosen)

    record = infer_store(Store(), backend, 1, lambda idx, out: None, warmup=1)
    assert record["compute"]["source"] == source
    if source == "backend":
        assert record["mean_ms"] == pytest.approx(EXEC_MS)
        assert "note" not in record["compute"]
    else:
        assert "timed instead" in record["compute"]["note"]


# -- 9. device nodes under another root appear at their /dev names ---------------------------
def test_every_device_node_is_mapped_to_its_dev_name_whatever_the_host_root(tmp_path):
    from zoobox.hosts.detect import NPU_CONTROL_NODES, NpuHost
    from zoobox.runners.npu import device_args

    root = tmp_path / "ascend-dev"  # zoobox.docker.dev_root, not /dev
    npu = NpuHost(devices=[0, 5], dev_root=root)
    args = device_args(npu, [5], ascend_runtime=False)
    mapped = [args[i + 1] for i, a in enumerate(args) if a == "--device"]
    names = ["davinci5", *NPU_CONTROL_NODES]
    assert mapped == [f"{root}/{name}:/dev/{name}" for name in names]
    # /dev itself maps onto itself, the same form
    plain = device_args(NpuHost(devices=[0], dev_root=tmp_path.anchor + "dev"), [0], False)
    assert "/dev/davinci0:/dev/davinci0" in plain


# -- 6. a compile holds one device; sharded stages one each; training all ----------------------
def test_compile_gets_the_first_device_only_and_training_gets_every_one(tmp_path):
    from zoobox.core.recipe import load_recipe
    from zoobox.hosts.detect import NpuHost
    from zoobox.pipeline.choice import Choice
    from zoobox.pipeline.pipeline import Options, Pipeline
    from zoobox.pipeline.shards import shard_calls
    from zoobox.runners.docker import DockerRunner, DockerSettings

    dev = tmp_path / "dev"
    dev.mkdir()
    npu = NpuHost(devices=[2, 3, 5], dev_root=dev)
    runner = DockerRunner(DockerSettings(artifacts=tmp_path / "art", npu=npu, tty=False))
    options = Options(artifacts=tmp_path / "art", cache=tmp_path, data=tmp_path, dry=True)
    recipe = load_recipe("retinanet")
    engine = Pipeline(recipe, Choice("docker", "aie", [2, 3, 5], "test"), runner, options)
    compile_call = engine.call_for("compile", tmp_path / "out")
    assert compile_call.devices == [2]
    argv = runner.argv(compile_call)
    assert f"{dev}/davinci2:/dev/davinci2" in argv
    assert not any("davinci3" in a or "davinci5" in a for a in argv)
    infer = engine.call_for("infer", tmp_path / "out")
    assert [c.devices for c in shard_calls(engine, infer, tmp_path)] == [[2], [3], [5]]
    assert engine.call_for("train", tmp_path / "out").devices == [2, 3, 5]


# -- 4. torch_aie.compile: the seeds' min_block_size (torch_aie's default) ---------------------
def test_aie_compile_leaves_min_block_size_at_torch_aies_default_as_the_seeds(
    tmp_path, fake_torch_aie
):
    torch = pytest.importorskip("torch")
    from zoostage.backends import get_backend

    torch.jit.trace(torch.nn.Conv2d(3, 2, 1), torch.randn(1, 3, 4, 4)).save(str(tmp_path / "m.ts"))
    for precision in ("default", "fp16"):  # the RetinaFace and the RetinaNet seed's
        fake_torch_aie.clear()
        facts = get_backend("aie", device="npu:0").compile(
            str(tmp_path / "m.ts"), str(tmp_path / "c.ts"), [1, 3, 4, 4], precision=precision
        )
        # neither seed's inference.py passes it: torch_aie's own default (documented: 1)
        assert "min_block_size" not in fake_torch_aie
        assert "default" in facts["min_block_size"]


# -- 8. the torch_aie wheel inside its release archive, under a name pip accepts ---------------
def test_wheel_names_as_pip_reads_them():
    from zoobox.envs.wheelnames import parse_wheel_name

    assert parse_wheel_name("torch_aie-6.3.rc2-cp39-cp39-linux_aarch64.whl")["abi"] == "cp39"
    assert parse_wheel_name("ais_bench-0.0.2-py3-none-any.whl")["python"] == "py3"
    assert parse_wheel_name("x-1.0-1build-py3-none-any.whl")["build"] == "1build"
    for bad in (
        "torch_aie-6.3.rc2-linux_aarch64.whl",  # too few parts
        "torch-aie-6.3.rc2-cp39-cp39-linux_aarch64.whl",  # '-' in the name: too many
        "torch_aie-6.3.RC2.B010-cp39-cp39-linux_aarch64.whl",  # not a PEP 440 version
        "torch_aie-6.3-x1-cp39-cp39-linux_aarch64.whl",  # a build tag must start with a digit
        "torch_aie-6.3-cp39-cp39-linux_aarch64.tar.gz",
    ):
        assert parse_wheel_name(bad) is None, bad


def test_an_invalid_wheel_name_in_the_release_tar_is_renamed_to_one_pip_installs(tmp_path):
    import subprocess

    from tests.fakes.releases import INVALID_MEMBER, torch_aie_release
    from zoobox.core.envspec import get_env
    from zoobox.envs import installers

    folder = tmp_path / "aie"
    folder.mkdir()
    for name in (
        "Ascend-cann-toolkit_7.0.RC1.alpha003_linux-x86_64.run",
        "Ascend-cann-aie_7.0.T51.B010_linux-x86_64.run",
    ):
        (folder / name).write_bytes(b"x")
    tar = folder / "Ascend-cann-torch-aie-6.3.RC2-linux_x86_64.tar.gz"
    member = torch_aie_release(tar, INVALID_MEMBER, arch="x86_64")
    check = installers.check_installers(get_env("aie"), folder, arch="x86_64")
    args = check.build_args()
    assert args["TORCH_AIE_WHL_MEMBER"] == member
    assert args["TORCH_AIE_WHL"] == "torch_aie-6.3.rc2-cp39-cp39-linux_x86_64.whl"

    # pip refuses the member's own name and installs the renamed file (no index, no deps)
    import tarfile

    with tarfile.open(tar) as archive:
        data = archive.extractfile(member).read()
    as_shipped = tmp_path / member.rsplit("/", 1)[-1]
    renamed = tmp_path / args["TORCH_AIE_WHL"]
    as_shipped.write_bytes(data)
    renamed.write_bytes(data)
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
    pip += ["--ignore-requires-python", "--platform", "linux_x86_64", "--python-version", "3.9"]
    pip += ["--only-binary=:all:", "--target"]
    refused = subprocess.run(
        [*pip, str(tmp_path / "a"), str(as_shipped)], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "wheel filename" in refused.stderr.lower()
    taken = subprocess.run(
        [*pip, str(tmp_path / "b"), str(renamed)], capture_output=True, text=True
    )
    assert taken.returncode == 0, taken.stderr
    assert (tmp_path / "b" / "torch_aie" / "__init__.py").is_file()


def test_a_release_tar_without_the_wheel_for_this_python_is_one_error(tmp_path):
    from tests.fakes.releases import torch_aie_release
    from zoobox.core.errors import UserError
    from zoobox.envs.wheelnames import wheel_in_archive

    tar = tmp_path / "t.tar.gz"
    torch_aie_release(tar)
    with pytest.raises(UserError, match=r"holds no torch_aie wheel for Python 3.7"):
        wheel_in_archive(tar, "torch_aie", "3.7")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(UserError, match="not a readable tar archive"):
        wheel_in_archive(tmp_path / "junk.tar.gz", "torch_aie", "3.9")


# -- 2. dcmi's -8005: a busy device, or a container without what dcmi needs --------------------
def test_8005_names_both_causes_and_the_check_for_each():
    from zoobox.hosts.npucompat import diagnose

    message = diagnose("dcmi module initialize failed. ret is -8005\n", [3])
    assert "\n" not in message and "davinci3" in message and "-8005" in message
    assert "another container or process" in message and "npu-smi info" in message
    for needed in ("/usr/local/dcmi", "/usr/local/Ascend/driver/lib64", "HwHiAiUser"):
        assert needed in message, needed
    assert "invoke doctor" in message


@pytest.fixture
def host_parts(tmp_path):
    """A 310P host's device nodes (group 1234, mode 660) and driver folder with lib64."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for device in (0, 1):
        node = dev / f"davinci{device}"
        node.touch()
        os.chown(node, 0, 1234)
        node.chmod(0o660)
    driver = tmp_path / "driver"
    (driver / "lib64").mkdir(parents=True)
    (driver / "version.info").write_text("Version=23.0.rc1\n")
    return dev, driver


def test_dcmi_prerequisites_checked_one_by_one(tmp_path, host_parts):
    from zoobox.hosts.detect import npu_host
    from zoobox.hosts.npucompat import dcmi_prerequisites

    dev, driver = host_parts
    npu = npu_host(dev_root=dev, driver_dir=driver)
    (tmp_path / "dcmi").mkdir()
    groups = {"HwHiAiUser": 1234}.get
    rows = {r[0]: r[1] for r in dcmi_prerequisites(npu, tmp_path / "dcmi", group_gid=groups)}
    assert rows["dcmi folder (mounted into NPU containers)"] == "ok"
    assert rows["driver libraries (mounted with the driver)"] == "ok"
    assert rows["HwHiAiUser group"] == "ok (gid 1234)"
    assert rows["davinci0 owner and mode"] == rows["davinci1 owner and mode"] == "ok"

    (driver / "lib64").rmdir()
    os.chown(dev / "davinci1", 0, 0)
    (dev / "davinci1").chmod(0o600)
    rows = {
        r[0]: r[1] for r in dcmi_prerequisites(npu, tmp_path / "none", group_gid=lambda n: None)
    }
    assert rows["dcmi folder (mounted into NPU containers)"].startswith("missing")
    assert rows["driver libraries (mounted with the driver)"].startswith("missing")
    assert rows["HwHiAiUser group"].startswith("missing")
    rows = {r[0]: r[1] for r in dcmi_prerequisites(npu, tmp_path / "dcmi", group_gid=groups)}
    assert "gid 0, not HwHiAiUser's 1234" in rows["davinci1 owner and mode"]
    assert "mode 600" in rows["davinci1 owner and mode"]


def test_doctor_shows_what_dcmi_needs_on_an_npu_host(tmp_path, host_parts):
    from zoobox.hosts.detect import ContainerEngine
    from zoobox.jobs.doctor import report
    from zoobox.pipeline.configure import settings_from

    dev, driver = host_parts
    settings = settings_from(
        {"zoobox": {"docker": {"dev_root": str(dev), "driver_dir": str(driver)}}}
    )
    text = report(
        settings, probe_engine=lambda: ContainerEngine(False, "no docker"), dcmi_dir=tmp_path / "x"
    )
    assert "dcmi needs (else -8005)" in text
    for line in ("dcmi folder (mounted into NPU containers)", "HwHiAiUser group"):
        assert line in text
    assert "missing: install the driver's dcmi" in text and str(driver / "lib64") in text


# -- 7. stages work in a folder of their own: the checkout stays clean --------------------------
def _porcelain():
    import subprocess

    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"not a git checkout: {result.stderr.strip()}")
    return result.stdout


@pytest.mark.slow
def test_an_npu_run_on_the_host_runner_leaves_the_checkout_clean(tmp_path, monkeypatch, host_parts):
    """The aie smoke checks compile with the fake torch_aie, which (as CANN) writes
    kernel_meta/ and fusion_result.json into its working directory."""
    pytest.importorskip("torch")
    from zoobox.hosts.detect import ContainerEngine
    from zoobox.jobs.smoke import run_smoke
    from zoobox.pipeline.configure import settings_from

    dev, driver = host_parts
    monkeypatch.setenv("PYTHONPATH", f"{FAKES}{os.pathsep}{REPO}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = _porcelain()
    settings = settings_from(
        {"zoobox": {"docker": {"dev_root": str(dev), "driver_dir": str(driver)}}}
    )
    summary = run_smoke(
        settings,
        artifacts=tmp_path / "smoke",
        runner="host",
        devices="0",
        probe_engine=lambda: ContainerEngine(False, "no docker"),
    )
    compiled = [c for c in summary["checks"] if c["check"].startswith("compile a 1-conv")]
    assert compiled and compiled[0]["status"] == "ok"  # the fake compiled (and wrote)
    assert _porcelain() == before
    assert not (REPO / "kernel_meta").exists() and not (REPO / "fusion_result.json").exists()
    assert not list((tmp_path / "smoke").rglob("kernel_meta"))  # nor into the report


def test_the_host_runner_runs_a_stage_in_its_own_folder_then_removes_it(tmp_path):
    from zoobox.core.envspec import get_env
    from zoobox.runners.base import StageCall
    from zoobox.runners.host import HostRunner

    out = tmp_path / ".infer.tmp-1"
    out.mkdir()
    script = "import os; open(os.path.join(os.environ['SEEN'], 'cwd'), 'w').write(os.getcwd())"
    call = StageCall("toy", "infer", "zoostage.cli", [], out, get_env("host"))
    runner = HostRunner()
    runner.argv = lambda call: [sys.executable, "-c", script]
    os.environ["SEEN"] = str(tmp_path)
    try:
        assert runner.run(call).returncode == 0
    finally:
        del os.environ["SEEN"]
    assert (tmp_path / "cwd").read_text() == str(out) + ".cwd"
    assert not (tmp_path / ".infer.tmp-1.cwd").exists()


# -- 5. a published throughput and the measured one cover the same span -----------------------
def test_graph_span_adds_the_host_tail_per_image_hand_computed():
    from types import SimpleNamespace

    from zoostage.infer import graph_span

    task = SimpleNamespace(graph_tail="NMS", images=10, graph_tail_seconds=0.050)
    graph = graph_span({"mean_ms": 40.0, "batch_size": 2}, task)
    # 5 ms per image on the host, 2 images per call: 40 + 10 = 50 ms per call, 40 images/s
    assert graph["tail_ms_per_image"] == pytest.approx(5.0)
    assert graph["mean_ms"] == pytest.approx(50.0)
    assert graph["throughput"] == pytest.approx(40.0)
    assert graph["span"] == "forward + NMS on the host"
    assert graph_span({"mean_ms": 40.0, "batch_size": 2}, SimpleNamespace(graph_tail=None)) is None
    nothing_run = SimpleNamespace(graph_tail="NMS", images=0, graph_tail_seconds=0.0)
    assert graph_span({"mean_ms": 40.0, "batch_size": 1}, nothing_run) is None


def test_the_report_compares_the_seeds_span_and_says_which_each_number_covers():
    from types import SimpleNamespace

    from zoostage.recipe import load_recipe
    from zoostage.report import render
    from zoostage.verdict import compare

    published = load_recipe("retinanet").published
    assert published["throughput_bs1"]["span"] == "graph"  # the seed's graph ends with its NMS
    timing = {
        "batch_size": 1,
        "mean_ms": 40.0,
        "throughput": 25.0,  # the forward alone
        "graph": {
            "span": "forward + NMS on the host",
            "tail_ms_per_image": 10.0,
            "mean_ms": 50.0,
            "throughput": 20.0,
        },
        "backend": "aie",
    }
    rows = compare(published, {"AP": 38.0}, timing, "official", 5000, 5000, True)
    speed = next(r for r in rows if r["metric"] == "throughput_bs1")
    assert speed["measured"] == 20.0  # like with like: not the forward's 25
    assert "forward + NMS on the host" in speed["span"] and "whole graph" in speed["span"]
    assert "span" not in next(r for r in rows if r["metric"] == "AP")
    text = render(
        SimpleNamespace(title="x", dataset={}), rows, {}, timing, {"weights": "official"}, {}, []
    )
    assert "- throughput_bs1 covers: forward + NMS on the host" in text
    assert "| throughput (images/s): forward only | 25.00 |" in text
    assert "| throughput (images/s): forward + NMS on the host | 20.00 (10.00 ms" in text
    # no host part timed (another backend's record): not measured, never the forward's
    del timing["graph"]
    rows = compare(published, {}, timing, "official", 5000, 5000, True)
    speed = next(r for r in rows if r["metric"] == "throughput_bs1")
    assert speed["measured"] is None and speed["status"] == "not measured"
    # a forward-only published number (RetinaFace) is set beside the forward
    face = load_recipe("retinaface").published
    rows = compare(face, {}, {"throughput": 25.0, "batch_size": 1}, "official", 1, 1, True)
    speed = next(r for r in rows if r["metric"] == "throughput_bs1")
    assert speed["measured"] == 25.0 and speed["span"].startswith("forward only")


def test_shards_merge_the_graph_span():
    from zoostage.shards import merge_timing

    def shard(mean, tail, calls):
        stats = {"mean_ms": mean, "p50_ms": mean, "p99_ms": mean, "throughput": 1000 / mean}
        graph = {"span": "s", "tail_ms_per_image": tail, "mean_ms": mean + tail}
        graph["throughput"] = 1000 / (mean + tail)
        return dict(stats, calls=calls, images=calls, graph=graph)

    merged = merge_timing([shard(10.0, 10.0, 1), shard(30.0, 20.0, 3)])
    assert merged["graph"]["throughput"] == pytest.approx(1000 / 20 + 1000 / 50)
    assert merged["graph"]["mean_ms"] == pytest.approx((20 + 3 * 50) / 4)
    assert merged["graph"]["tail_ms_per_image"] == pytest.approx((10 + 3 * 20) / 4)
    one_without = merge_timing([shard(10.0, 10.0, 1), {**shard(30.0, 20.0, 3), "graph": None}])
    assert "graph" not in one_without


def test_the_closing_table_says_what_a_graph_span_throughput_covers(tmp_path):
    import json

    from zoobox.jobs.summary import render_summary

    rows = [
        {"metric": "throughput", "measured": 20.0, "published": 19.9, "unit": "images/s"},
        {"metric": "AP", "measured": 38.0, "published": 38.3, "unit": "AP %"},
    ]
    rows[0]["span"] = "forward + NMS on the host, as the published number's whole graph"
    summary = {"recipe": "retinanet", "rows": rows, "throughput": 25.0}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    text = render_summary(tmp_path)
    assert "throughput covers forward + NMS on the host" in text
    rows[0]["span"] = "forward only, input on the device, as the published number"
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert "covers" not in render_summary(tmp_path)  # the images/s column's own span
