"""The body shared by every recipe task: settings + flags -> pipeline -> run -> summary."""

from __future__ import annotations

from zoobox.core.errors import main_guard


def run_recipe(c, recipe_name, target, *, params=None, param_pairs=None, force=False, **flags):
    """Run `target` (None: all stages) of a recipe; UserErrors end as one line, exit 2.

    `flags` are build_pipeline's (data, artifacts, runner, backend, devices, dry).
    """

    def go():
        from zoobox.jobs.run_and_summarize import run_and_summarize
        from zoobox.pipeline.configure import build_pipeline, parse_params, settings_from

        merged = parse_params(param_pairs)
        merged.update({k: v for k, v in (params or {}).items() if v is not None})
        pipeline = build_pipeline(
            settings_from(c.config),
            recipe_name,
            params=merged,
            force=(target or "*",) if force else (),
            **flags,
        )
        return run_and_summarize(pipeline, target)[0]

    return main_guard(go)
