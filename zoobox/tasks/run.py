"""The body shared by every recipe task: build the engine, run, summarize."""

from __future__ import annotations

from zoobox.engine import main_guard


def run_recipe(
    c,
    recipe_name,
    target,
    *,
    data=None,
    artifacts=None,
    runner=None,
    backend=None,
    devices=None,
    params=None,
    param_pairs=None,
    force=False,
    dry=False,
    summary=True,
):
    """Run `target` (None: all stages) of a recipe; UserErrors end as one line, exit 2."""

    def go():
        from zoobox.session import build_engine, check_dataset, parse_params, settings_from
        from zoobox.summary import render_summary

        settings = settings_from(c.config)
        merged = parse_params(param_pairs)
        merged.update({k: v for k, v in (params or {}).items() if v is not None})
        engine = build_engine(
            settings,
            recipe_name,
            data=data,
            artifacts=artifacts,
            runner=runner,
            backend=backend,
            devices=devices,
            params=merged,
            force=(target or "*",) if force else (),
            dry=dry,
        )
        if not dry:
            check_dataset(engine, target)
        result = engine.run(target)
        report = result.stage_dir("report")
        if summary and not dry and (target in (None, "report")) and report.is_dir():
            print()
            print(render_summary(report))
            print(f"\nreport: {report / 'report.md'}")
        return result

    return main_guard(go)
