"""qbench's command line: ``qbench train [overrides]``, ``qbench train -m <sweeps>``, ``qbench list``.

User mistakes end as one line on stderr and exit code 2; the run directory is created only after every
job of the (multi)run has been checked.
"""
from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

from qbench.errors import Terminated, UserError
from qbench.launch import check_run_dir_free, hydra_overrides, launch, resume_run

USAGE = """usage: qbench <command> [options]

       qbench --version

commands:
  train [key=value ...]     train one run (Hydra overrides, e.g. method=bnn model=mlp dataset=mnist)
  train -m key=a,b ...      a Hydra multirun: one run per combination
  train resume=<run dir> [trainer.device=… trainer.compile=true …]
                            continue an interrupted run from its last checkpoint
  ptq run=<run dir> [method.w_bits=8 method.a_bits=8 method.per_channel=true method.calib_batches=100]
                            post-training quantization of a finished full-precision run
  export run=<run dir> [format=qbench|onnx] [float_weights=true] [image=uint8|float] [out=<dir>]
                            the trained model in real low-bit form (bit-packed weights + manifest)
                            in <run dir>/export, for qbench.deploy; format=onnx: int8 QDQ ONNX (QAT,
                            PTQ) in <run dir>/export-onnx, or with float_weights=true a float ONNX
  evaluate export=<dir> [backend=auto|torch] [limit=N]
                            the deployed model's test accuracy beside the training-time model's, image by
                            image (predictions that differ, largest logit difference)
  table paper=<key> [table=T] [runs=<dir>...] [tier=full|smoke] [out=<dir>] [--force]
                            a paper's reported figures beside your finished runs (status of each figure);
                            printed, and written as .md/.csv/.tex only with out= (never over a table
                            that counted more runs, unless --force)
  reproduce paper=<key> [table=T] [rows=id,...] [seeds=3 | seed=3,4] [tier=smoke|full] [key=value ...]
                            run a paper's rows x seeds as one Hydra multirun (tagged for qbench table)
  plot runs=<dir or glob>... [metric=val_acc] [by=method,model] [out=curves.png] [--force]
  plot paper=<key> [table=T] [runs=<dir>] [tier=full|smoke] [metric=val_acc] [out=<dir>] [--force]
                            learning curves overlaid: mean over seeds, min-max band (PNG; paper plots
                            go to out=, default the current folder; never over a plot of more runs)
  compare runs=<dir or glob>... [by=method,model] [out=<dir>] [--force]
                            finished runs side by side, mean ± std over seeds, one row per configuration
  summary model=<m> method=<m> dataset=<d> [key=value ...]
  summary run=<run dir>     per layer: bits, parameters, MACs; model size quantized vs float32 (and, for
                            a run with an export, the deployed size measured from its files)
  bench [--methods fp,bnn] [--models vgg_small] [--batch-sizes 256] [--reference] [overrides]
                            training images/s, ratios to full precision and to a plain PyTorch loop
  bench --inference run=<run dir> [--batch-sizes 1,64] [--json F]
                            the deployed model against its float32 twin: latency, images/s, sizes, and
                            each binary conv against the float conv of its shape
  list                      methods, models, datasets, optimizers and schedules

`qbench train --help` shows the config groups and every option."""


OWN_HELP = ("ptq", "export", "evaluate", "table", "reproduce", "plot", "compare", "summary", "list")  # train and bench: Hydra / argparse


def command_usage(command: str) -> str:
    """The lines of USAGE about one command (``qbench <command> --help``)."""
    lines, keep = ["usage:"], False
    for line in USAGE.splitlines():
        if not line.startswith("   "):  # a command line, or text outside the list: a new entry
            keep = line.startswith("  ") and line.split()[0] == command
            line = line.replace("  ", "  qbench ", 1)
        if keep:
            lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `qbench list | head`: the reader left; say nothing more, as a Unix tool does
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("--version", "-V"):
        from qbench import __version__
        print(f"qbench {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    from qbench.config import renamed

    rest = renamed(rest, say=True)  # an old key name (method.bits_w) under its new one, with a line saying so
    if command in OWN_HELP and any(a in ("-h", "--help") for a in rest):
        print(command_usage(command))
        return 0
    commands = {"train": train, "ptq": ptq_command, "export": export_command, "evaluate": evaluate_command, "reproduce": reproduce_command, "table": table_command,
                "compare": compare_command, "plot": plot_command, "summary": summary_command,
                "bench": bench_command, "list": list_command}
    try:
        if command not in commands:
            raise UserError(f"unknown command {command!r}; valid: {', '.join(commands)}")
        return commands[command](rest) or 0
    except UserError as e:
        print(f"qbench: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("qbench: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM
    except KeyboardInterrupt:
        print("qbench: interrupted", file=sys.stderr)
        return 130


# --- train -----------------------------------------------------------------------------------------

def train(args: list[str]) -> int:
    from qbench.config import EXECUTION_KEYS, GROUPS

    resume = [a for a in args if a.startswith("resume=")]
    if resume and resume[0] != "resume=null":
        others = [a for a in args if not a.startswith("resume=")]
        bad = [a for a in others if a.partition("=")[0] not in EXECUTION_KEYS or "=" not in a]
        if bad:
            raise UserError(f"resume=<run dir> continues a run with its own config; it takes only where and how to "
                            f"run it ({', '.join(EXECUTION_KEYS)}), got: {' '.join(bad)}")
        return resume_run(Path(resume[0].split("=", 1)[1]), others)
    from qbench import distributed

    if distributed.world_size() > 1 and any(a in ("-m", "--multirun") for a in args):
        raise UserError("a multirun (-m) cannot run inside torchrun: torchrun trains one run on several "
                        "processes; sweep with a launcher (hydra/launcher=slurm) whose jobs each call torchrun")
    if any(a in ("--help", "-h") for a in args):
        print(train_help([a for a in hydra_overrides(args) if a.split("=", 1)[0] in GROUPS]))
        return 0
    if "--hydra-help" not in args:
        from qbench.config import _parse, check_overrides

        check_overrides(hydra_overrides(args))  # every job a sweep would run; then: a, b without -m
        if not any(a in ("-m", "--multirun") for a in args):  # (Hydra's advice for that is five lines)
            sweeps = [o.input_line for o in _parse(hydra_overrides(args)) if o.is_sweep_override()]
            if sweeps:
                raise UserError(f"{sweeps[0]} gives several values, which only a multirun takes; did you mean "
                                f"`qbench train -m {' '.join(args)}`?")
        check_run_dir_free(hydra_overrides(args))
    launch(args)
    return 0


def train_help(groups: list[str]) -> str:
    """``qbench train --help``: the groups qbench train takes (not configs/paper, which qbench reproduce reads)
    and the config they compose to (``qbench train method=xnor --help`` shows XNOR-Net's)."""
    from omegaconf import OmegaConf

    from qbench.config import GROUPS, check_overrides, compose, group_options

    check_overrides(groups, data=False)
    cfg = compose(groups)
    lines = [command_usage("train"), "", "config groups (group=option; qbench list describes each):"]
    lines += [f"  {g}: {', '.join(group_options(g))}" for g in GROUPS]
    lines += ["", "config" + (f" of {' '.join(groups)}" if groups else "") + " (override any key with key=value; "
              "+method.key=value adds a constructor argument):", ""]
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    lines.append(OmegaConf.to_yaml(cfg).rstrip())
    lines += ["", "papers: qbench reproduce paper=<key> (not a train option); Hydra's own flags: qbench train --hydra-help"]
    return "\n".join(lines)


# --- ptq -------------------------------------------------------------------------------------------

def ptq_command(args: list[str]) -> int:
    from qbench.ptq import run_ptq

    runs = [a for a in args if a.startswith("run=")]
    if len(runs) != 1:
        raise UserError("qbench ptq needs exactly one run=<run dir> (a finished full-precision training run)")
    run_dir = run_ptq(Path(runs[0].split("=", 1)[1]), [a for a in args if not a.startswith("run=")])
    print(f"run dir: {run_dir}", flush=True)
    return 0


# --- export and evaluate --------------------------------------------------------------------------

def export_command(args: list[str]) -> int:
    from qbench.export import export_run

    kv = _kv(args, ("run", "format", "out", "float_weights", "image"), "export")
    if "run" not in kv:
        raise UserError("qbench export needs run=<run dir> (a finished training run)")
    fw = (kv.get("float_weights") or ["false"])[0]
    if fw not in ("true", "false"):
        raise UserError(f"float_weights={fw!r} is invalid; valid: true, false")
    out = export_run(Path(kv["run"][0]), (kv.get("format") or ["qbench"])[0],
                     Path(kv["out"][0]) if "out" in kv else None, fw == "true", (kv.get("image") or ["uint8"])[0])
    manifest = json.loads((out / "manifest.json").read_text())
    size = manifest["weight_bytes"]
    print(f"{manifest['method']} {manifest['model']}: {len(manifest['layers'])} layers, weights "
          f"{size['deployed'] / 1024:.1f} KiB deployed vs {size['float32'] / 1024:.1f} KiB float32 "
          f"({size['float32'] / size['deployed']:.1f}x smaller)")
    print(f"export: {out}", flush=True)
    return 0


def evaluate_command(args: list[str]) -> int:
    from qbench.export import evaluate_export

    kv = _kv(args, ("export", "backend", "limit"), "evaluate")
    if "export" not in kv:
        raise UserError("qbench evaluate needs export=<export dir> (written by qbench export)")
    limit = (kv.get("limit") or [None])[0]
    if limit is not None and not (limit.isdigit() and int(limit) > 0):
        raise UserError(f"limit={limit!r} is invalid; allowed: an integer >= 1")
    r = evaluate_export(Path(kv["export"][0]), (kv.get("backend") or ["auto"])[0],
                        None if limit is None else int(limit))
    for row in r["layers"]:
        print(f"  {row['layer']:<24} {row['op']:<7} weight {row['weight']}({row['bits']} bit), input {row['input']}: "
              f"{row['path']}")
    print(f"{r['method']} {r['model']} {r['dataset']}, {r['images']} test images; kernel: {r['kernel']}")
    print(f"deployed accuracy     {100 * r['deployed_acc']:.2f}%")
    print(f"training-time model   {100 * r['fake_quant_acc']:.2f}%  (the same images, fake-quantized)")
    if r["run_final_val_acc"] is not None:
        print(f"run's final_val_acc   {100 * r['run_final_val_acc']:.2f}%  (summary.json)")
    print(f"same predicted class  {r['same_prediction']}/{r['images']}; largest logit difference "
          f"{r['max_abs_logit_diff']:.3g}")
    return 0


# --- tables ----------------------------------------------------------------------------------------

LIST_ARGS = ("runs", "by", "rows")  # comma-separated lists; every other key=value is one value


def _force(args: list[str]) -> tuple[list[str], bool]:
    """The results commands' one flag: ``--force`` replaces an earlier table or plot that counted more runs."""
    return [a for a in args if a != "--force"], "--force" in args


def _kv(args: list[str], allowed: tuple[str, ...], command: str) -> dict[str, list[str]]:
    """key=value arguments of the results commands, checked against ``allowed``."""
    out: dict[str, list[str]] = {}
    for a in args:
        key, eq, value = a.partition("=")
        if not eq or key not in allowed:
            raise UserError(f"qbench {command}: unexpected argument {a!r}; valid: "
                            + ", ".join(f"{k}=..." for k in allowed)
                            + (", --force" if command in ("table", "plot", "compare") else ""))
        out.setdefault(key, []).extend([v for v in value.split(",") if v] if key in LIST_ARGS else [value])
    return out


def reproduce_command(args: list[str]) -> int:
    from qbench.results.reproduce import reproduce

    own = ("paper", "table", "rows", "seeds", "tier")
    kv = _kv([a for a in args if a.split("=", 1)[0] in own], own, "reproduce")
    extra = [a for a in args if a.split("=", 1)[0] not in own]
    if "paper" not in kv:
        from qbench.results import paper_keys
        raise UserError(f"qbench reproduce needs paper=<key>; valid: {', '.join(paper_keys())}")
    seeds = (kv.get("seeds") or [None])[0]
    if seeds is not None and not seeds.isdigit():
        raise UserError(f"seeds={seeds!r} is invalid; allowed: an integer >= 1")
    reproduce(kv["paper"][0], (kv.get("table") or [None])[0], kv.get("rows"),
              None if seeds is None else int(seeds),
              (kv.get("tier") or ["full"])[0], extra)
    return 0


def table_command(args: list[str]) -> int:
    from qbench.report import console

    from qbench.results.tables import paper_table

    args, force = _force(args)
    kv = _kv(args, ("paper", "table", "runs", "out", "tier"), "table")
    if "paper" not in kv:
        from qbench.results import paper_keys
        raise UserError(f"qbench table needs paper=<key>; valid: {', '.join(paper_keys())}")
    key = kv["paper"][0]
    tier = (kv.get("tier") or ["full"])[0]
    for pattern in kv.get("runs", []):  # an explicit folder that is not there is a typo, not "not run"
        if not glob.glob(str(Path(pattern).expanduser())):
            raise UserError(f"runs={pattern!r}: no such folder (give the folder your runs are in, e.g. runs)")
    out = paper_table(key, kv.get("runs", ["runs"]), (kv.get("table") or [None])[0], tier)
    stem = "table" + (f"_{kv['table'][0]}" if "table" in kv else "") + ("_smoke" if tier == "smoke" else "")
    if "out" in kv:  # refused before anything is shown or written
        out.check_write(Path(kv["out"][0]), stem, force)
    out.show(console())
    if "out" not in kv:  # printing is safe; files are written only where asked, so results/ is never touched
        print("(printed only: add out=<dir> to write it as .md, .csv and .tex)")
        return 0
    written = out.write(Path(kv["out"][0]), stem, force=force)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def plot_command(args: list[str]) -> int:
    from qbench.results.plots import plot_curves

    args, force = _force(args)
    kv = _kv(args, ("runs", "paper", "table", "tier", "metric", "by", "out"), "plot")
    metric = (kv.get("metric") or ["val_acc"])[0]
    if "paper" in kv:
        from qbench.results.tables import paper_series

        key, tier = kv["paper"][0], (kv.get("tier") or ["full"])[0]
        written = []
        for t, series in paper_series(key, kv.get("runs", ["runs"]), (kv.get("table") or [None])[0], tier).items():
            name = f"curves_{t if t != '-' else 'main'}{'_smoke' if tier == 'smoke' else ''}.png"
            out = Path((kv.get("out") or ["."])[0]) / name.replace(" ", "_").replace("§", "")
            written.append(plot_curves(series, metric, f"{key} {t} ({tier} tier)", out, force))
        if not written:
            raise UserError(f"no finished {tier}-tier runs for paper {key!r} under {', '.join(kv.get('runs', ['runs']))}")
    else:
        from qbench.results.tables import labelled_groups

        if "runs" not in kv:
            raise UserError("qbench plot needs runs=<run folder or glob> or paper=<key>")
        labelled, _ = labelled_groups(kv["runs"], kv.get("by", ["method", "model"]))
        series = [("/".join(str(v) for v in values) + (f" [{others}]" if others else ""), g.runs)
                  for values, others, g in labelled]
        written = [plot_curves(series, metric, f"{metric} of {', '.join(kv['runs'])}",
                               Path((kv.get("out") or ["curves.png"])[0]), force)]
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def summary_command(args: list[str]) -> int:
    from qbench.config import check_overrides, compose, load_run_config
    from qbench.summary import print_deployed, print_summary, summarize

    bad = [a for a in args if a.startswith("-")]
    if bad:
        raise UserError(f"qbench summary takes key=value overrides only; got {' '.join(bad)}")
    runs = [a for a in args if a.startswith("run=")]
    if runs:  # a trained run: its own config, and its export's measured size when it has one
        from omegaconf import OmegaConf

        if len(args) > 1:
            raise UserError(f"qbench summary run=<run dir> takes no other settings; got {' '.join(args[1:])}")
        run = Path(runs[0].split("=", 1)[1])
        if not (run / "config.yaml").is_file():
            raise UserError(f"{run} is not a qbench run directory (no config.yaml)")
        cfg = load_run_config(run)
        OmegaConf.update(cfg, "method.init", None, force_add=True)  # the architecture is all a summary needs
        print_summary(cfg, summarize(cfg))
        if (run / "export" / "manifest.json").is_file():
            print_deployed(run / "export")
        else:
            print(f"no export yet (qbench export run={run} writes one; its size is then shown here)")
        return 0
    check_overrides(list(args), data=False)  # a summary reads no data
    cfg = compose(list(args))
    print_summary(cfg, summarize(cfg))
    return 0


def bench_command(args: list[str]) -> int:
    if "--inference" in args:
        from qbench.bench_inference import main as inference_main

        return inference_main([a for a in args if a != "--inference"])
    from qbench.bench import main as bench_main

    return bench_main(args)


def compare_command(args: list[str]) -> int:
    from qbench.report import console

    from qbench.results.tables import compare

    args, force = _force(args)
    kv = _kv(args, ("runs", "by", "out"), "compare")
    if "runs" not in kv:
        raise UserError("qbench compare needs runs=<run folder or glob>[,...]")
    out = compare(kv["runs"], kv.get("by", ["method", "model"]))
    if "out" in kv:
        out.check_write(Path(kv["out"][0]), "compare", force)
    out.show(console())
    if "out" in kv:
        print("wrote " + ", ".join(str(p) for p in out.write(Path(kv["out"][0]), "compare", force)))
    return 0


# --- list ------------------------------------------------------------------------------------------

def list_command(args: list[str]) -> int:
    from omegaconf import OmegaConf
    from rich.console import Console
    from rich.table import Table

    from qbench.config import compose, config_dir, group_options

    if args:
        raise UserError(f"qbench list takes no arguments; got {' '.join(args)}")
    console = Console()
    for group, cols in (("method", ("summary", "paper")), ("model", ("summary",)), ("dataset", ("summary",))):
        table = Table(title=f"{group}s ({group}=...)", title_justify="left", show_lines=False)
        table.add_column("name", style="bold")
        for c in cols:
            table.add_column(c)
        for name in group_options(group):
            node = OmegaConf.load(config_dir() / group / f"{name}.yaml")
            if "defaults" in node:  # an option built on another (sq_twn on sq_bwn): composed
                node = compose([f"{group}={name}"])[group]
            elif "name" not in node and group in node:  # a global-package config (WAGE) nests its own keys
                node = node[group]
            table.add_row(name, *(str(node.get(c, "")) for c in cols))
        console.print(table)
    for group in ("optim", "sched"):
        console.print(f"[bold]{group}=[/bold] " + " | ".join(group_options(group)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
