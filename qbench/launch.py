"""Launching runs: a (multi)run through Hydra's main, the run folder's lifecycle (never over an earlier run;
nothing left behind by a refusal) and resume. The command line (``qbench.cli``) parses; this module runs."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from qbench.errors import UserError

HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "--config-path", "-cp",
                          "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}


def hydra_overrides(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in HYDRA_FLAGS_WITH_VALUE
        else:
            out.append(a)
    return out


def check_run_dir_free(overrides: list[str]) -> None:
    """``hydra.run.dir=<folder>`` naming a folder that holds a run: refused before Hydra writes .hydra/ into it."""
    for o in overrides:
        key, _, value = o.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and "${" not in value:
            folder = Path(value).expanduser()
            held = [n for n in ("config.yaml", "summary.json", "checkpoints", "multirun.yaml") if (folder / n).exists()]
            if held or (key == "hydra.sweep.dir" and folder.is_dir() and any(folder.iterdir())):
                raise UserError(f"{key}={value} already holds a run ({', '.join(held) or 'other files'}); qbench never "
                                "writes into one: give a new folder")


def resolve_now(value: str) -> str:
    """``${now:<strftime format>}`` resolved by Hydra's own resolver, as at launch; a value that names other
    settings stays as it is (Hydra resolves it when the sweep starts)."""
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    setup_globals()  # registers Hydra's resolvers (now, hydra) as its main does
    try:
        return str(OmegaConf.create({"value": value}).value)
    except OmegaConfBaseException:
        return value


def sweep_dir(overrides: list[str]) -> tuple[list[str], Path | None]:
    """A multirun's folder, fixed before it starts (its ``${now:...}`` resolved here) so that qbench can show
    the runs in it when it ends: (the overrides with hydra.sweep.dir set, the folder or None if it depends on
    other settings)."""
    from omegaconf import OmegaConf

    from qbench.config import config_dir

    given = [o for o in overrides if o.split("=", 1)[0] == "hydra.sweep.dir"]
    value = given[-1].split("=", 1)[1] if given else OmegaConf.to_container(
        OmegaConf.load(config_dir() / "train.yaml"), resolve=False)["hydra"]["sweep"]["dir"]
    value = resolve_now(str(value))
    rest = [o for o in overrides if o.split("=", 1)[0] != "hydra.sweep.dir"]
    return rest + [f"hydra.sweep.dir={value}"], (None if "${" in value else Path(value))


def launch(args: list[str]) -> Path | None:
    """Run Hydra's main with ``args``; for a multirun, its folder (after a table of its runs is shown)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from qbench.config import config_dir

    @hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
    def task(cfg):
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            return run(cfg, run_dir)
        except UserError as e:
            print(f"qbench: error: {e}", file=sys.stderr)
            discard_unstarted(run_dir)
            sys.exit(2)

    saved = sys.argv
    # Hydra's argparse wants the overrides in one run: flags (-m, --cfg job, -p key) first, overrides last
    from qbench import distributed

    overrides = hydra_overrides(args)
    flags = [a for a in args if a not in overrides]
    sweep = None
    if any(a in ("-m", "--multirun") for a in flags):
        overrides, sweep = sweep_dir(overrides)
    scratch = None
    if not distributed.is_main():  # torchrun's other ranks: rank 0 owns the run directory and its logs
        import tempfile
        scratch = tempfile.mkdtemp(prefix=f"qbench-rank{distributed.rank()}-")
        overrides += ["hydra.output_subdir=null", "hydra/job_logging=disabled", f"hydra.run.dir={scratch}"]
    sys.argv = ["qbench train", *flags, "hydra.job.name=train", *overrides]
    try:
        task()
        if sweep is not None and sweep.is_dir() and distributed.is_main() and not any(
                f in ("--cfg", "-c", "--info") for f in flags):
            from qbench.report import console
            from qbench.results.tables import sweep_summary

            sweep_summary(sweep).show(console())
        return sweep
    except ValueError as e:
        if str(e).startswith("Only one of"):  # Hydra's own flag check (e.g. -m with --cfg)
            raise UserError(str(e)) from None
        raise
    finally:
        sys.argv = saved
        distributed.teardown()
        if scratch:
            import shutil
            shutil.rmtree(scratch, ignore_errors=True)


def discard_unstarted(run_dir: Path) -> None:
    """A refusal that could only be made once Hydra had made the run directory (check_overrides makes every
    one it can before): remove what Hydra wrote there (.hydra/, train.log), the folder if that leaves it empty,
    and a multirun's folder if it then holds only its multirun.yaml. A folder with anything else stays."""
    import shutil

    from qbench import distributed

    if not distributed.is_main() or not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - {".hydra", "train.log"}:
        return
    _close_log_handlers(run_dir / "train.log")
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / "train.log").unlink(missing_ok=True)
    run_dir.rmdir()
    sweep = run_dir.parent
    if (sweep / "multirun.yaml").is_file() and {p.name for p in sweep.iterdir()} == {"multirun.yaml"}:
        (sweep / "multirun.yaml").unlink()
        sweep.rmdir()


def _close_log_handlers(path: Path) -> None:
    """Close and detach every logging handler that writes to ``path`` (Hydra's job logging opened train.log): a
    later line logged in this process must not recreate the file that was just removed."""
    for logger in [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]:
        for h in list(getattr(logger, "handlers", [])):
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve():
                logger.removeHandler(h)
                h.close()


def run(cfg, run_dir: Path, resume: bool = False, overrides: list[str] = ()):
    from omegaconf import OmegaConf

    from qbench import distributed
    from qbench.train import Trainer

    main = distributed.is_main()
    if main and not resume and ((run_dir / "summary.json").exists() or (run_dir / "checkpoints").exists()):
        raise UserError(f"run directory {run_dir} already holds a run; qbench never overwrites one "
                        "(set hydra.run.dir to a new folder)")
    trainer = Trainer(cfg, run_dir, resume=resume, overrides=overrides)
    if main and not resume:  # written once the data and model are built: a bad setting leaves no run behind
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    summary = trainer.fit()
    if not main:
        return summary["final_val_acc"]
    acc = summary["final_val_acc"]
    print(f"{summary['method']} {summary['model']} {summary['dataset']} seed {summary['seed']}: "
          f"final val_acc {100 * acc:.2f}% after {summary['epochs_completed']} epochs, "
          f"{summary['wall_seconds']:.0f} s on {summary['device']}" if acc is not None else "no evaluation ran")
    if summary.get("test_acc_at_best_val") is not None:
        print(f"test acc {100 * summary['test_acc_at_best_val']:.2f}% at the best validation epoch "
              f"({summary['best_val_epoch']}); {100 * summary['final_test_acc']:.2f}% at the last")
    print(f"run dir: {run_dir}", flush=True)
    return acc


def resume_run(run_dir: Path, overrides: list[str] = ()) -> int:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from qbench.config import check_buildable, check_data, load_run_config, validate

    run_dir = run_dir.resolve()  # recorded and printed as the absolute folder, however it was typed
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a qbench run directory (no config.yaml)")
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        status = json.loads(summary_path.read_text()).get("status")
        if status == "completed":
            raise UserError(f"run {run_dir} already completed; nothing to resume")
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise UserError(f"run {run_dir} has no checkpoint yet (it stopped in its first epoch); start it anew")
    cfg = load_run_config(run_dir)
    try:  # a malformed value (`trainer.device=${x`) or a dangling interpolation is the user's, not a crash
        cfg.merge_with_dotlist(list(overrides))
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise UserError(f"resume override {' '.join(overrides)}: {str(e).splitlines()[0]}") from None
    validate(cfg)
    check_buildable(cfg)
    check_data(cfg)
    from qbench import distributed

    if distributed.is_main():
        from qbench.report import log_to

        log_to(run_dir)
    run(cfg, run_dir, resume=True, overrides=list(overrides))
    return 0

