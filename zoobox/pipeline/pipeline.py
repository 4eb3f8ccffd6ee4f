"""The pipeline: plan a recipe's stages, skip what is up to date, run the rest.

For each stage, in recipe order: render its command, fingerprint it (code, parameters,
inputs, environment), compare with the stage.json of its last complete run, and either
skip it or run it in a temporary folder that becomes its output only when it succeeds.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from zoobox.core.artifacts import RECORD_FILES, ArtifactStore, RecipeLock, read_json
from zoobox.core.envspec import get_env
from zoobox.core.errors import (
    USER_ERROR_EXIT,
    StageFailed,
    StageIncomplete,
    StageStopped,
    UserError,
)
from zoobox.core.fingerprint import sha256_json
from zoobox.core.outputs import scan
from zoobox.core.paths import REPO, git_revision
from zoobox.core.recipe import Recipe, context_for, load_recipe, render_args, resolve_params
from zoobox.hosts.npucompat import diagnose
from zoobox.pipeline.choice import Choice
from zoobox.pipeline.inputs import external_inputs, parts_for, what_changed
from zoobox.pipeline.shards import run_shards, shard_calls
from zoobox.runners.base import Runner, StageCall, quote, signals_as_interrupts
from zoostage.backends import NPU_BACKENDS
from zoostage.cli import STATUS_FILE

# ARTIFACTS/<recipe>/logs/<stage>/: what NPU tools log during a stage's last run, kept
# when the stage fails (its output folder is not).
LOGS = "logs"


def reads_dataset(spec) -> bool:
    """Whether a stage reads the dataset root ({data} in its arguments)."""
    return any("{data}" in str(value) for value in spec.args.values())


@dataclass
class Options:
    """Everything a run depends on besides the recipe; tasks fill it from config + flags."""

    artifacts: Path
    cache: Path
    data: Path | None = None
    params: dict = field(default_factory=dict)  # overrides of the recipe's params
    force: tuple[str, ...] = ()  # stage names to rerun regardless ("*": all)
    dry: bool = False
    echo: bool = True


@dataclass
class StagePlan:
    name: str
    action: str  # "skip" | "run"
    reason: str
    command: str
    fingerprint: str
    record: dict | None = None


@dataclass
class RunResult:
    recipe: Recipe
    choice: Choice
    plans: list[StagePlan]
    store: ArtifactStore

    def stage_dir(self, name: str) -> Path:
        return self.store.stage_dir(name)


def _say(text: str) -> None:
    print(text, flush=True)


class Pipeline:
    """A recipe's stages on one runner: `run(target)` plans, skips and executes them.

    `run_checked` and `run_with` run one StageCall; zoobox.pipeline.shards uses them to
    run a sharded stage's calls side by side.
    """

    def __init__(self, recipe: Recipe | str, choice: Choice, runner: Runner, options: Options):
        self.recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
        self.choice = choice
        self.runner = runner
        self.options = options
        self.store = ArtifactStore(options.artifacts, self.recipe.name)
        self.params = resolve_params(self.recipe, options.params)
        self.params["backend"] = choice.backend
        self.revision = git_revision()
        self._keep_fds: tuple[int, ...] = ()  # the lock's descriptor while a run holds it
        self._announced = False  # the runner / backend line is said once per pipeline

    # -- rendering -------------------------------------------------------------------------
    def _roots(self) -> list[tuple[str, str]]:
        roots = [
            (str(self.store.root), "<artifacts>"),
            (str(REPO), "<repo>"),
            (str(Path(self.options.cache).resolve()), "<cache>"),
        ]
        if self.options.data is not None:
            roots.append((str(Path(self.options.data).resolve()), "<data>"))
        return sorted(roots, key=lambda item: len(item[0]), reverse=True)

    def portable(self, value: str) -> str:
        """A path argument with its root replaced by a name, for fingerprints."""
        for root, name in self._roots():
            if value == root or value.startswith(root + os.sep):
                return name + value[len(root) :]
        return value

    def _external_inputs(self, call: StageCall) -> dict:
        """Fingerprints of the files and folders a call names besides upstream outputs."""
        spec = self.recipe.stage(call.stage)
        exempt = [str(self.store.stage_dir(need)) for need in spec.needs]
        exempt.append(str(self.store.folder / "work"))
        return external_inputs(
            call.args,
            exempt,
            cache=str(Path(self.options.cache).resolve()),
            cache_file=self.recipe.weights.get("file"),
            portable=self.portable,
            inside=(str(self.store.root),),
        )

    def call_for(self, name: str, out: Path, devices: list[int] | None = None) -> StageCall:
        spec = self.recipe.stage(name)
        if devices is None:
            # A stage on one device (compile, benchmark) gets the first only; sharded
            # stages get theirs from shard_calls, training every one ({devices}).
            devices = self.choice.devices
            if not spec.takes_all_devices:
                devices = devices[:1]
        devices = list(devices)
        needs_npu = spec.npu and self.choice.backend in NPU_BACKENDS
        device = self.runner.device_for(devices) if needs_npu else "cpu"
        stage_dirs = {need: str(self.store.stage_dir(need)) for need in spec.needs}
        context = context_for(
            self.recipe,
            self.params,
            stage_dirs,
            data=str(Path(self.options.data).resolve()) if self.options.data else "",
            cache=str(Path(self.options.cache).resolve()),
            device=device,
            work=str(self.store.folder / "work"),
            devices=self.runner.devices_for(devices),
        )
        args = render_args(spec, context)
        return StageCall(
            recipe=self.recipe.name,
            stage=name,
            module=spec.module,
            args=args,
            out=out,
            env=get_env(spec.env),
            needs_npu=needs_npu,
            devices=devices,
            uses_data=reads_dataset(spec),
            logs=self.store.folder / LOGS / name,
            keep_fds=self._keep_fds,
        )

    def fingerprint_parts(self, call: StageCall, upstream: dict) -> dict:
        """What the stage's result depends on (zoobox.pipeline.inputs says what each part is)."""
        env = self.runner.env_identity(call.env, self.options.dry)
        return parts_for(call, upstream, self._external_inputs(call), env, self.portable)

    def fingerprint(self, call: StageCall, upstream: dict) -> str:
        return sha256_json(self.fingerprint_parts(call, upstream))

    # -- running ---------------------------------------------------------------------------
    def run(self, target: str | None = None, stages: list[str] | None = None) -> RunResult:
        """Run `target` and what it needs (None: the default stages), or exactly `stages`
        (in recipe order; a cluster run's phases pick theirs)."""
        if stages is not None:
            names = [name for name in self.recipe.stage_names if name in stages]
        else:
            names = self.recipe.upstream(target) if target else self.recipe.default_stages
        if not self._announced:  # a second run() (the demo's weights, then the rest)
            _say(f"zoobox {self.recipe.name}: {self.choice.line}")
            self._announced = True
        lock = RecipeLock(self.store.folder)
        # SIGTERM / SIGHUP unwind like Ctrl-C: stages stopped, temporary folders removed,
        # and the lock released last, once no stage process lives.
        with signals_as_interrupts():
            if not self.options.dry:
                lock.acquire(f"{self.recipe.name} {target or 'all'}")
                # Stages inherit the lock: if zoobox itself is killed, the folder stays
                # locked until its stages (told to die with it) have exited too.
                self._keep_fds = (lock.fileno(),)
            try:
                if not self.options.dry:
                    for path in self.store.clean_stale():
                        _say(f"removed {path.name}, left by a stage that did not finish")
                plans = self._run_stages(names)
            finally:
                self._keep_fds = ()
                lock.release()
        return RunResult(self.recipe, self.choice, plans, self.store)

    def _forced(self, name: str) -> bool:
        return "*" in self.options.force or name in self.options.force

    def _run_stages(self, names: list[str]) -> list[StagePlan]:
        plans: list[StagePlan] = []
        outputs: dict[str, str] = {}  # stage -> content digest of its current output
        rerun: set[str] = set()  # stages that run (or would, with --dry) this time
        forced: set[str] = set()  # forced stages and everything downstream of them
        for name in names:
            spec = self.recipe.stage(name)
            for need in spec.needs:
                if need not in outputs:
                    outputs[need] = _output_id(self.store.record(need))
            upstream = {need: outputs[need] for need in spec.needs}
            placeholder = self.store.folder / f".{name}.tmp-XXXXXXXX"
            call = self.call_for(name, placeholder)
            parts = self.fingerprint_parts(call, upstream)
            fingerprint = sha256_json(parts)
            record = self.store.record(name)
            if self._forced(name):
                action, reason = "run", "forced"
            elif any(need in forced for need in spec.needs):
                action, reason = "run", "upstream forced"
            elif self.options.dry and any(need in rerun for need in spec.needs):
                # Whether the upstream's output changes is known only once it has run.
                action, reason = "run", "upstream reruns"
            elif record is None:
                action, reason = "run", "no complete output"
            elif record.get("fingerprint") != fingerprint:
                action, reason = "run", "changed: " + what_changed(record, parts)
            elif problem := self.store.check_outputs(name, record, refresh=not self.options.dry):
                # The output on disk is not the one recorded (deleted, edited, added to).
                action, reason = "run", f"changed: output {problem}"
            else:
                action, reason = "skip", "up to date"
            if action == "run" and reason.startswith(("forced", "upstream forced")):
                forced.add(name)
            if self._sharded(call):
                command = "\n  $ ".join(
                    quote(self.runner.argv(c)) for c in shard_calls(self, call, placeholder)
                )
            else:
                command = quote(self.runner.argv(call))
            plan = StagePlan(name, action, reason, command, fingerprint, record)
            plans.append(plan)
            if action == "skip":
                outputs[name] = _output_id(record)
                _say(f"[{name}] skip: {reason}")
                if self.options.dry and self.options.echo:
                    _say(f"  $ {command}")
                continue
            rerun.add(name)
            if self.options.dry:
                _say(f"[{name}] would run ({reason}) in env {call.env.name}")
                _say(f"  $ {command}")
                outputs[name] = "pending"
                continue
            plan.record = self._execute(call, parts, reason)
            outputs[name] = _output_id(plan.record)
        return plans

    def _sharded(self, call: StageCall) -> bool:
        return self.recipe.stage(call.stage).shard and len(self.choice.devices) > 1

    def run_checked(self, call: StageCall) -> list[str]:
        """Run one call; a failure becomes the right error. Returns the argv it ran."""
        argv = self.runner.argv(call)
        if self.options.echo:
            _say(f"  $ {quote(argv)}")
        completed = self.runner.run(call)
        code = self._proven_exit(call, completed.returncode)
        if code != 0:
            logs = _written_logs(call)
            known = diagnose(completed.tail, call.devices) if call.needs_npu else None
            if known:
                where = f" (the NPU tools' logs: {logs})" if logs else ""
                raise UserError(f"stage {call.stage}: {known}{where}")
            if code == USER_ERROR_EXIT:
                raise StageStopped(call.stage)
            by_hand = quote(self.runner.argv(self._by_hand(call)))
            raise StageFailed(call.stage, code, by_hand, logs=logs)
        return argv

    def _by_hand(self, call: StageCall) -> StageCall:
        """The call with --out in a folder that outlives the run, for rerunning by hand.

        Its temporary folder is gone by the time the user reads the command:
        ARTIFACTS/<recipe>/<stage>.by-hand takes its place (shards keep their subfolder).
        """
        out = Path(call.out)
        parts = out.parts
        for index, part in enumerate(parts):
            if part.startswith(f".{call.stage}.tmp-"):
                out = self.store.folder / f"{call.stage}.by-hand" / Path(*parts[index + 1 :])
                break
        return dataclasses.replace(call, out=out)

    def run_with(self, runner: Runner, call: StageCall) -> list[str]:
        """Run one call on another runner (a shard merge on the host); returns its argv."""
        argv = runner.argv(call)
        if self.options.echo:
            _say(f"  $ {quote(argv)}")
        completed = runner.run(call)
        code = self._proven_exit(call, completed.returncode, by_hand=quote(argv))
        if code != 0:
            raise StageFailed(call.stage, code, quote(argv))
        return argv

    def _proven_exit(self, call: StageCall, code: int, by_hand: str | None = None) -> int:
        """The stage's exit status, once its own completion record confirms a 0.

        A client's exit code is not proof: podman's `docker run --rm` exits 0 whatever
        the container did. The stage kit writes OUT/status.json as the stage's last act
        (zoostage.cli.run); without {"status": "ok"} there, the stage did not finish.
        """
        if code != 0:
            return code
        status = read_json(Path(call.out) / STATUS_FILE)
        if isinstance(status, dict) and status.get("status") == "ok":
            return 0
        if isinstance(status, dict) and status.get("status") == "error":
            recorded = status.get("exit")
            if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded:
                return recorded  # it stopped with its own error line: say so as usual
        why = (
            f"it wrote no {STATUS_FILE} as its last act"
            if status is None
            else f"its {STATUS_FILE} does not say ok"
        )
        if by_hand is None:
            by_hand = quote(self.runner.argv(self._by_hand(call)))
        raise StageIncomplete(call.stage, why, by_hand)

    def _execute(self, call: StageCall, parts: dict, reason: str) -> dict:
        self.runner.check(call.env)
        if call.logs is not None:
            self.store.refuse_links(call.logs)  # removed below, then written by NPU tools
        temp = self.store.new_temp(call.stage)
        call.out = temp
        if call.logs is not None:
            shutil.rmtree(call.logs, ignore_errors=True)  # they say what the last run did
        sharded = self._sharded(call)
        _say(
            f"[{call.stage}] run ({reason}) in env {call.env.name}"
            + (f", sharded over devices {self.choice.devices}" if sharded else "")
        )
        started = time.time()
        try:
            argvs = run_shards(self, call, temp) if sharded else [self.run_checked(call)]
        except KeyboardInterrupt:
            self.store.discard(temp)
            _say(f"[{call.stage}] stopped; its unfinished output was removed")
            raise
        except BaseException:
            self.store.discard(temp)
            raise
        ended = time.time()
        record = self._record(call, parts, argvs, started, ended)
        self.store.commit(call.stage, temp, record)
        _say(f"[{call.stage}] done in {ended - started:.1f} s")
        return record

    def adopt(self, name: str, folder: Path, argvs: list[list[str]], started: float) -> dict:
        """Make `folder` (made elsewhere: a cluster run's merged shards) stage `name`'s
        output, recorded with the fingerprint this engine gives the stage, so that later
        runs with the same inputs skip it. Call under the recipe's lock (see run)."""
        spec = self.recipe.stage(name)
        upstream = {need: _output_id(self.store.record(need)) for need in spec.needs}
        call = self.call_for(name, self.store.folder / f".{name}.tmp-XXXXXXXX")
        parts = self.fingerprint_parts(call, upstream)
        temp = self.store.new_temp(name)
        try:
            for item in Path(folder).iterdir():
                shutil.move(str(item), str(temp / item.name))
        except BaseException:
            self.store.discard(temp)
            raise
        call.out = temp
        record = self._record(call, parts, argvs, started, time.time())
        self.store.commit(name, temp, record)
        return record

    def _record(self, call: StageCall, parts: dict, argvs, started: float, ended: float) -> dict:
        """The stage.json of a stage run that succeeded (its output in call.out)."""
        temp = call.out
        # The completion record has done its job; the output is what the stage made.
        (temp / STATUS_FILE).unlink(missing_ok=True)
        digest, manifest = scan(temp, exclude=RECORD_FILES)
        return {
            "recipe": call.recipe,
            "stage": call.stage,
            "status": "ok",
            "run_id": uuid.uuid4().hex,
            "fingerprint": sha256_json(parts),
            "fingerprint_parts": parts,
            "output_digest": digest,
            "outputs": manifest,  # checked before the stage is next skipped
            "module": call.module,
            "args": call.args,
            "command": argvs if len(argvs) > 1 else argvs[0],
            "code": parts["code"],
            "inputs": parts["inputs"],
            "external": parts["external"],
            "env": self.runner.env_identity(call.env),
            "choice": {
                "runner": self.choice.runner,
                "backend": self.choice.backend,
                "devices": self.choice.devices,
            },
            "zoobox_revision": self.revision,
            "start": _iso(started),
            "end": _iso(ended),
            "seconds": round(ended - started, 3),
        }


def _written_logs(call: StageCall) -> Path | None:
    """The stage's NPU log folder when the run wrote anything there."""
    if call.logs is not None and call.logs.is_dir() and any(call.logs.iterdir()):
        return call.logs
    return None


def _output_id(record: dict | None) -> str:
    """What stands for an upstream output in a fingerprint: its content digest."""
    if record is None:
        return "missing"
    # Outputs recorded before digests existed are known by their run id.
    return record.get("output_digest") or record.get("run_id", "unknown")


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stamp)) + f"{stamp % 1:.3f}"[1:]
