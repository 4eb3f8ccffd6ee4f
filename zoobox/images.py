"""Building and listing the env images (docker CLI; any Docker-compatible engine)."""

from __future__ import annotations

import subprocess

from zoobox.envs import EnvSpec, get_env, load_envs
from zoobox.errors import UserError
from zoobox.paths import REPO
from zoobox.runners import quote
from zoobox.summary import table


def buildable(spec: EnvSpec) -> bool:
    return bool(spec.dockerfile)


def build_command(spec: EnvSpec, no_cache: bool = False, build_args: dict | None = None) -> list:
    args = ["docker", "build", "-f", str(REPO / spec.dockerfile), "-t", spec.image]
    if no_cache:
        args.append("--no-cache")
    merged = {"BASE_IMAGE": spec.base_image} if spec.base_image else {}
    merged.update(build_args or {})
    for key, value in merged.items():
        args += ["--build-arg", f"{key}={value}"]
    args += ["--label", f"org.zoobox.env={spec.name}", "--label", f"org.zoobox.spec={spec.hash}"]
    args.append(str(REPO))
    return args


def build_images(env: str | None = None, no_cache: bool = False, dry: bool = False):
    specs = [get_env(env)] if env else [s for s in load_envs().values() if buildable(s)]
    for spec in specs:
        if not buildable(spec):
            raise UserError(f"env {spec.name} has no image (it is the machine's own Python)")
        if not (REPO / spec.dockerfile).is_file():
            raise UserError(f"env {spec.name}: {spec.dockerfile} does not exist")
        argv = build_command(spec, no_cache)
        print(f"$ {quote(argv)}", flush=True)
        if not dry:
            result = subprocess.run(argv)
            if result.returncode != 0:
                raise UserError(f"building {spec.image} failed (exit {result.returncode})")


def list_images() -> str:
    rows = []
    for spec in load_envs().values():
        if not buildable(spec):
            continue
        result = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", spec.image],
            capture_output=True,
            text=True,
        )
        built = result.returncode == 0
        rows.append(
            [
                spec.name,
                spec.image,
                "yes" if built else "no",
                result.stdout.strip()[:19] if built else "-",
            ]
        )
    return table(rows, ["env", "image", "built", "id"])
