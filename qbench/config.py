"""Finding, composing and checking configs before anything runs.

Every user mistake -- an unknown group option, an unknown key, a bad value, missing data -- is found here
and reported as one line naming the bad value and the valid ones, before Hydra creates a run directory.
"""
from __future__ import annotations

import functools
import itertools
import json
import os
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from qbench.errors import UserError, choices

# the source tree's configs/ (an editable install or a checkout), else the copy a wheel ships as qbench/configs
_HERE = Path(__file__).resolve().parent
CONFIG_DIR = Path(os.environ.get("QBENCH_CONFIG_DIR") or next(
    (d for d in (_HERE.parent / "configs", _HERE / "configs") if (d / "train.yaml").is_file()), _HERE / "configs"))
GROUPS = ("method", "model", "dataset", "optim", "sched")
# groups a run adds on top with +group=<option>: a paper's training recipe (configs/recipe: optimizer, schedule,
# epochs, batch -- `qbench train method=sq_bwn model=vgg9 +recipe=sq_vgg9`) and the smoke tier (configs/tier:
# a sliver of the data for one epoch, `+tier=smoke`). qbench reproduce reads the same files for its rows.
ADDED_GROUPS = ("recipe", "tier")
# where and how a run executes, never what it learns: a resumed run may change them (summary.json's segments
# record them for the process that used them), and runs that differ only in them are grouped together
EXECUTION_KEYS = ("trainer.device", "trainer.progress", "trainer.compile", "trainer.compile_backend",
                  "trainer.compile_mode", "trainer.eval_batch_size", "trainer.checkpoint_every", "data.root",
                  "data.workers", "data.download")
# where ``+key=value`` may add a key: nodes whose keys all go to a constructor (or are only recorded: tags).
# Everywhere else qbench reads keys by name, so an added one would be silently ignored.
OPEN_NODES = ("method", "model", "optim", "sched", "tags")
MAX_PRECHECK_JOBS = 64
# keys renamed to one scheme (<what>_bits, as DoReFa, QAT and PTQ name them), old -> new. An old key still works,
# with a line saying so; run configs written before the rename (results/wage) are read with the new names
RENAMED = {"method.bits_w": "method.w_bits", "method.bits_a": "method.a_bits", "method.bits_g": "method.g_bits",
           "method.bits_e": "method.e_bits", "optim.bits_w": "optim.w_bits", "optim.bits_g": "optim.g_bits"}
# torch.compile's modes; reduce-overhead replays the step as CUDA graphs, which is what a small model whose
# step is bound by kernel launches (the MNIST MLPs) needs
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def config_dir() -> Path:
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise UserError(f"qbench's configs are not at {CONFIG_DIR}; reinstall qbench (pip install . or "
                        "pip install -e . from its source tree) or set QBENCH_CONFIG_DIR to a copy of configs/")
    return CONFIG_DIR


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("train", overrides=renamed(overrides))


def renamed(overrides: list[str], say: bool = False) -> list[str]:
    """``overrides`` with each renamed key (RENAMED) under its new name; ``say``: one line on stderr for each."""
    import sys

    out = []
    for o in overrides:
        prefix = o[:len(o) - len(o.lstrip("+~"))]
        key, eq, value = o[len(prefix):].partition("=")
        if key in RENAMED:
            if say:
                print(f"qbench: {key} is now {RENAMED[key]} (the old name still works)", file=sys.stderr)
            o = f"{prefix}{RENAMED[key]}{eq}{value}"
        out.append(o)
    return out


def load_run_config(run_dir: Path) -> DictConfig:
    """A run's config.yaml as today's configs write it: any key renamed since under its new name, and a setting
    added since with the value the run had without it (``dataset.storage``: folder for imagenet, else in
    memory), so that runs made before and after group together."""
    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    for old, new in RENAMED.items():
        value = OmegaConf.select(cfg, old, default=_MISSING)
        if value is not _MISSING:
            parent, leaf = old.rsplit(".", 1)
            del cfg[parent][leaf]
            OmegaConf.update(cfg, new, value, force_add=True)
    dataset = cfg.get("dataset")
    if isinstance(dataset, DictConfig) and "name" in dataset and "storage" not in dataset:
        OmegaConf.update(cfg, "dataset.storage", "folder" if dataset.name == "imagenet" else "in_memory",
                         force_add=True)
    return cfg


def option_settings(group: str, name: str) -> dict:
    """An added group's option (configs/recipe, configs/tier) as flat ``key -> value`` settings, as Hydra composes
    it: its defaults first (another option of the group, or ``override /optim: sgd`` -> ``optim: sgd``), then its
    own keys, nested keys dotted (``optim: {lr: 0.1}`` -> ``optim.lr: 0.1``)."""
    if name not in group_options(group):
        raise UserError(f"unknown {group} {name!r}; valid: {choices(group_options(group))}")
    doc = OmegaConf.to_container(OmegaConf.load(config_dir() / group / f"{name}.yaml"))
    out: dict = {}
    for entry in doc.pop("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            out.update(option_settings(group, entry))
        elif isinstance(entry, dict):
            (key, value), = entry.items()
            out[key.split()[-1].lstrip("/")] = value  # "override /optim": "sgd"

    def flat(node: dict, prefix: str = "") -> None:
        for k, v in node.items():
            if isinstance(v, dict) and v:
                flat(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v
    flat(doc)
    return out


@functools.lru_cache(maxsize=64)
def _compose_groups(groups: tuple[str, ...]) -> DictConfig:
    """The config of a choice of groups alone, composed once per choice (only read: which keys exist)."""
    return compose(list(groups))


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(overrides=overrides)
    except HydraException as e:
        raise UserError(f"cannot parse override: {str(e).strip().splitlines()[0]}") from None


def _values(o) -> list[str]:
    """An override's values as override strings (a sweep gives several)."""
    if o.is_sweep_override():
        try:
            return [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        except Exception:  # e.g. glob() sweeps: let Hydra expand them; check the first job only
            return []
    return [o.input_line]


LAUNCHER_PLUGINS = {"local": "hydra_submitit_launcher", "slurm": "hydra_submitit_launcher",
                    "submitit_local": "hydra_submitit_launcher", "submitit_slurm": "hydra_submitit_launcher",
                    "parallel": "hydra_joblib_launcher", "joblib": "hydra_joblib_launcher"}


def check_launcher(parsed) -> None:
    """hydra/launcher=<name>: one of qbench's (configs/hydra/launcher) or Hydra's, with its plugin installed."""
    import importlib.util

    for o in parsed:
        if o.key_or_group != "hydra/launcher":
            continue
        name = str(o.value())
        valid = sorted(p.stem for p in (config_dir() / "hydra" / "launcher").glob("*.yaml")) + ["basic"]
        if name not in valid and name not in LAUNCHER_PLUGINS:
            raise UserError(f"unknown hydra/launcher {name!r}; valid: {choices(valid)}")
        plugin = LAUNCHER_PLUGINS.get(name)
        if plugin and importlib.util.find_spec(f"hydra_plugins.{plugin}") is None:
            raise UserError(f"hydra/launcher={name} needs the {plugin.replace('_', '-')} plugin: "
                            "pip install \"qbench[launchers]\"")


def check_overrides(overrides: list[str], data: bool = True) -> None:
    """Check every job a (multi)run would launch, before Hydra makes any directory (``data``: and that its
    dataset's files are there)."""
    everything = _parse(overrides)
    check_launcher(everything)
    parsed = [o for o in everything if not o.key_or_group.startswith("hydra")]
    for o in parsed:
        group = o.key_or_group
        if group == "resume":
            raise UserError("resume=<run dir> continues one run and takes no other overrides: "
                            "qbench train resume=<run dir>")
        if group in GROUPS + ADDED_GROUPS and not o.is_delete():
            valid = group_options(group)
            vals = [v.split("=", 1)[1] for v in _values(o)] if o.is_sweep_override() else [str(o.value())]
            for v in vals:
                if v not in valid:
                    raise UserError(f"unknown {group} {v!r}; valid: {choices(valid)}")
    per_override = [_values(o) or [] for o in parsed]
    per_override = [v for v in per_override if v]
    jobs = list(itertools.islice(itertools.product(*per_override), MAX_PRECHECK_JOBS))
    checked_data = set()
    for job in jobs:
        job = list(job)
        groups_only = [j for j in job if j.split("=", 1)[0].lstrip("+~") in GROUPS + ADDED_GROUPS]
        base = _compose_groups(tuple(groups_only))
        for j in job:
            key = j.split("=", 1)[0]
            if key.lstrip("+~") in ADDED_GROUPS:
                continue
            if key.startswith("+") and "/" not in key and "@" not in key \
                    and key.lstrip("+").split(".")[0] not in OPEN_NODES \
                    and OmegaConf.select(base, key.lstrip("+"), default=_MISSING) is _MISSING:
                _unknown_key(base, key.lstrip("+"), added=True)
            if key.startswith(("+", "~")) or key in GROUPS or "/" in key or "@" in key:
                continue
            if OmegaConf.select(base, key, default=_MISSING) is _MISSING:
                _unknown_key(base, key)
        try:
            cfg = compose(job)
        except Exception as e:
            raise UserError(_first_line(e)) from None
        check_types(cfg, base)
        validate(cfg)
        check_buildable(cfg)
        data_key = (cfg.dataset.name, cfg.data.root, cfg.data.download)
        if data and data_key not in checked_data:
            check_data(cfg)
            checked_data.add(data_key)


def _unknown_key(base: DictConfig, key: str, added: bool = False) -> None:
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    node = OmegaConf.select(base, parent) if parent else base
    keys = choices(node.keys()) if isinstance(node, DictConfig) else "(none)"
    where = f"under {parent!r}" if parent else "at top level"
    why = (f" (+ adds keys only under {', '.join(OPEN_NODES)}: qbench reads no other new key)" if added else "")
    raise UserError(f"unknown config key {key!r}{why}; keys {where}: {keys}")


# Every key of the composed config is checked: its type by check_types (from its default in the config
# files, or NULLABLE where the default is null), its range or choices by validate, and the keys that reach a
# constructor by building it (check_buildable). The only keys left free, and why:
FREE_TEXT = {"summary": "a description that qbench list shows and nothing reads",
             "paper": "the citation that qbench list shows and nothing reads",
             "tags": "labels qbench reproduce writes and qbench table matches"}
# the identities a group option sets; changing one would mislabel the run (choose another option instead)
IDENTITIES = ("method.name", "model.name", "dataset.name", "dataset.storage")
# the type of each key whose default is null (null stays valid)
NULLABLE = {
    "number": ("model.bn_momentum", "model.fc_width", "optim.eps", "method.error_gamma",
               "method.input_quantizer.gamma", "method.output_quantizer.gamma",
               "method.callbacks.glorot_lr_scale.exponent"),
    "bool": ("model.bias", "method.stochastic_activations", "method.input_quantizer.stochastic",
             "method.callbacks.glorot_lr_scale.batch_norm_gamma"),
    # a folder (check_data / check_init_run look at it), or a choice its constructor checks
    "text": ("data.root", "method.init", "method.callbacks.inq.init", "method.callbacks.bottom_up.init",
             "model.bn_gamma_init"),
}
_ALLOWED = {"bool": "true, false", "number": "a number", "text": "text", "list": "a list", "numbers": "a list of numbers"}


def _kind(value) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, ListConfig)):
        return "numbers" if value and all(_kind(v) == "number" for v in value) else "list"
    return None


def _leaves(node: DictConfig, prefix: str = ""):
    """(key, node) of every value that is not itself a config node, interpolations included."""
    for k in node.keys():
        child = node._get_node(k)
        if isinstance(child, DictConfig):
            yield from _leaves(child, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", child


def check_types(cfg: DictConfig, base: DictConfig) -> None:
    """Each value of ``cfg`` has the type of its default in ``base`` (the same groups with no other override):
    ``trainer.progress=maybe`` is refused like ``trainer.epochs=abc``. A default that is an interpolation is
    checked where it points; a key that now holds a config node (another quantizer) is its constructor's."""
    nullable = {k: kind for kind, keys in NULLABLE.items() for k in keys}
    for key, node in _leaves(base):
        top, leaf = key.split(".")[0], key.rsplit(".", 1)[-1]
        if top in ("hydra", "resume") or top in FREE_TEXT or leaf in FREE_TEXT:
            continue
        parent = OmegaConf.select(cfg, key.rsplit(".", 1)[0]) if "." in key else cfg
        mine = parent._get_node(leaf) if isinstance(parent, DictConfig) and leaf in parent else None
        if mine is None or isinstance(mine, DictConfig) or mine._is_interpolation():
            continue  # gone, a config node now (its constructor checks it), or checked where it points
        value = OmegaConf.select(cfg, key)
        default = OmegaConf.select(base, key)  # where an interpolation points
        if key in IDENTITIES:
            if value != default:
                chosen = OmegaConf.select(base, f"{top}.name")
                raise UserError(f"{key}={value!r} cannot be changed: {top}={chosen} sets it; pick another with "
                                f"{top}=<name> (qbench list)")
            continue
        want = _kind(default) if default is not None else nullable.get(key)
        if want is None or value is None and (default is None or key in nullable):
            continue
        got = _kind(value)
        if got != want and not (want == "list" and got == "numbers") and not (want == "numbers" and value == []):
            raise UserError(f"{key}={value!r} is invalid; {'valid' if want == 'bool' else 'allowed'}: {_ALLOWED[want]}"
                            + (" or null" if key in nullable else ""))


def compile_options(trainer: DictConfig) -> dict:
    """torch.compile's keyword arguments for trainer.compile_backend and trainer.compile_mode (a mode other
    than default is passed on only when set: backends other than inductor take no mode)."""
    mode = trainer.get("compile_mode", "default")
    return {"backend": trainer.get("compile_backend", "inductor"), **({"mode": mode} if mode != "default" else {})}


_MISSING = object()


def _first_line(e: Exception) -> str:
    text = re.sub(r"\s+", " ", str(e)).strip()
    return text[:300] if text else type(e).__name__


def _int(cfg, key: str, minimum: int, optional: bool = False) -> None:
    v = OmegaConf.select(cfg, key)
    if optional and v is None:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if optional else "")
        raise UserError(f"{key}={v!r} is invalid; allowed: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Values that Hydra cannot type-check: ranges, enumerations, model x dataset compatibility."""
    from qbench.build import resolve_device
    from qbench.data.loader import in_memory
    from qbench.losses import LOSSES
    from qbench.models import MODELS

    if cfg.method.get("post_training"):
        raise UserError(f"method {cfg.method.name!r} is post-training, not trained: "
                        "qbench ptq run=<run dir of a trained fp model>")
    _int(cfg, "seed", 0)
    for key, low in (("trainer.epochs", 1), ("trainer.batch_size", 1), ("trainer.eval_batch_size", 1),
                     ("trainer.eval_every", 1),
                     ("trainer.checkpoint_every", 1), ("data.workers", 0)):
        _int(cfg, key, low)
    _int(cfg, "trainer.steps_per_epoch", 1, optional=True)
    _int(cfg, "data.subset", 1, optional=True)
    _int(cfg, "data.val_subset", 1, optional=True)
    _int(cfg, "data.holdout", 1, optional=True)
    held = in_memory(cfg.dataset)
    if cfg.data.get("holdout") and not held:
        raise UserError(f"data.holdout={cfg.data.holdout} is for the datasets held in memory (valid: null for "
                        f"{cfg.dataset.name}, whose validation set is its own folder)")
    t = cfg.trainer
    if t.loss not in LOSSES:
        raise UserError(f"trainer.loss={t.loss!r} is invalid; valid: {choices(LOSSES)}")
    if t.amp not in (False, "bf16"):
        raise UserError(f"trainer.amp={t.amp!r} is invalid; valid: false, bf16")
    # .get: a run directory written before these settings existed still resumes
    compile_, backend = t.get("compile", False), t.get("compile_backend", "inductor")
    if not isinstance(compile_, bool):
        raise UserError(f"trainer.compile={compile_!r} is invalid; valid: true, false")
    mode = t.get("compile_mode", "default")
    if mode not in COMPILE_MODES:
        raise UserError(f"trainer.compile_mode={mode!r} is invalid; valid: {choices(COMPILE_MODES)}")
    if compile_ or backend != "inductor":
        from torch._dynamo import list_backends

        backends = list_backends(exclude_tags=())
        if backend not in backends:
            raise UserError(f"trainer.compile_backend={backend!r} is invalid; valid: "
                            f"{choices(b for b in backends if 'TESTING' not in b)}")
    if t.get("channels_last", "auto") not in ("auto", True, False):
        raise UserError(f"trainer.channels_last={t.channels_last!r} is invalid; valid: auto, true, false")
    if not (t.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", str(t.device))):
        raise UserError(f"trainer.device={t.device!r} is invalid; valid: auto, cpu, cuda, cuda:N")
    resolve_device(t.device)  # cuda on a machine without one, or cuda:N past its last device
    lr = cfg.optim.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        raise UserError(f"optim.lr={lr!r} is invalid; allowed: a number > 0")
    milestones = cfg.sched.get("milestones")
    if milestones is not None and (not isinstance(milestones, (list, ListConfig)) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones)):
        raise UserError(f"sched.milestones={milestones!r} is invalid; allowed: a list of epochs >= 1, e.g. [80,120]")
    zca = cfg.dataset.get("zca")
    if zca is not None and (isinstance(zca, bool) or not isinstance(zca, (int, float)) or not zca > 0
                            or not held):
        raise UserError(f"dataset.zca={zca!r} is invalid; valid: null (no whitening) or ZCA's eigenvalue offset "
                        "eps, a number > 0 (Torch7 unsup.zca_whiten's: 1e-5), for a dataset held in memory "
                        "(dataset.storage=in_memory)")
    gcn = cfg.dataset.get("gcn")
    if gcn is not None and (isinstance(gcn, bool) or not isinstance(gcn, (int, float)) or not gcn > 0
                            or not held):
        raise UserError(f"dataset.gcn={gcn!r} is invalid; valid: null or the norm each image is scaled to, a number "
                        "> 0 (pylearn2's CIFAR-10: 55), for a dataset held in memory (dataset.storage=in_memory)")
    lcn = cfg.dataset.get("lcn")
    if lcn is not None and (isinstance(lcn, bool) or not isinstance(lcn, int) or lcn < 1 or lcn % 2 == 0
                            or not held):
        raise UserError(f"dataset.lcn={lcn!r} is invalid; valid: null or an odd kernel size (pylearn2's LeCunLCN: 7), "
                        "for a dataset held in memory (dataset.storage=in_memory)")
    step = cfg.sched.get("step_size")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 1):
        raise UserError(f"sched.step_size={step!r} is invalid; allowed: an integer >= 1 (epochs)")
    aug = cfg.dataset.augment
    if not isinstance(aug.crop_padding, int) or isinstance(aug.crop_padding, bool) or aug.crop_padding < 0:
        raise UserError(f"dataset.augment.crop_padding={aug.crop_padding!r} is invalid; allowed: an integer >= 0")
    if not isinstance(aug.hflip, bool):
        raise UserError(f"dataset.augment.hflip={aug.hflip!r} is invalid; valid: true, false")
    resize, size = aug.get("resize"), cfg.dataset.image_size
    if resize is not None and not (
            (isinstance(resize, int) and not isinstance(resize, bool) and resize >= size)
            or (isinstance(resize, (list, ListConfig)) and len(resize) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in resize)
                and size <= resize[0] <= resize[1])):
        raise UserError(f"dataset.augment.resize={resize!r} is invalid; allowed: null (random-resized crop), a "
                        f"shorter side >= dataset.image_size={size} (e.g. 256), or a range [min, max] (e.g. "
                        "[256,480])")
    acts = ("relu", "hardtanh", "identity", "clip01", "leaky")  # checked even where the method's activation replaces it
    for key in ("model.activation", "method.activation"):
        act = OmegaConf.select(cfg, key)
        if act is not None and act not in acts:
            raise UserError(f"unknown activation {act!r} ({key}); valid: {choices(acts)}")
    foreign = foreign_model_settings(cfg)
    if foreign:
        key = sorted(foreign)[0]
        having = [m for m in group_options("model") if key in OmegaConf.load(config_dir() / "model" / f"{m}.yaml")]
        raise UserError(f"model.{key} (set by method={cfg.method.name}) is not a setting of model "
                        f"{cfg.model.name!r}; models with it: {choices(having)}")
    extra = cfg.dataset.get("extra")
    if extra is not None and not isinstance(extra, bool):
        raise UserError(f"dataset.extra={extra!r} is invalid; allowed: true, false")
    width = cfg.model.get("width")
    if width is not None and (not isinstance(width, (int, float)) or width <= 0):
        raise UserError(f"model.width={width!r} is invalid; allowed: a number > 0")
    entry = MODELS[cfg.model.name]
    if entry.max_image_size is not None and cfg.dataset.image_size > entry.max_image_size:
        raise UserError(f"model {cfg.model.name!r} is defined for small inputs (<= {entry.max_image_size} px) "
                        f"and dataset {cfg.dataset.name!r} has {cfg.dataset.image_size} px images; "
                        f"models for it: {choices(n for n, e in MODELS.items() if e.max_image_size is None)}")


def foreign_model_settings(cfg: DictConfig) -> set[str]:
    """Keys of cfg.model that the model's own config does not have: a method with a global config (WAGE sets
    model.bn=false) can add them; a model without that switch cannot honour it."""
    path = config_dir() / "model" / f"{cfg.model.name}.yaml"
    return set(cfg.model) - set(OmegaConf.load(path)) if path.is_file() else set()


def check_buildable(cfg: DictConfig) -> None:
    """Build the job once as it will run -- the method (its quantizers probed, its callbacks made), the model on
    the meta device (shapes only: no memory, no weight init), the layer policy and callbacks' set-up, the
    optimizer and schedule -- and check every run it starts from (``method.init``, a schedule's own ``init``):
    a bad setting of any of them is one line now rather than a traceback in a run directory."""
    import torch

    from qbench.build import build
    from qbench.optim import build_scheduler, optimizer_for

    for init in dict.fromkeys([cfg.method.get("init")] + [OmegaConf.select(c, "init") if isinstance(c, DictConfig)
                                                          else None for c in (cfg.method.get("callbacks") or {}).values()]):
        if init:
            check_init_run(init, cfg)
    with torch.device("meta"):
        built = build(cfg)
    for part, make in (("optim", lambda: optimizer_for(cfg.optim, built.model, built.method.callbacks)),
                       ("sched", lambda: build_scheduler(cfg.sched, optimizer_for(cfg.optim, built.model,
                                                                                  built.method.callbacks)))):
        try:
            make()
        except Exception as e:
            cause = e.__cause__ or e
            settings = ", ".join(f"{k}={v!r}" for k, v in OmegaConf.to_container(cfg[part]).items() if k != "_target_")
            raise UserError(f"{part} ({settings}) cannot be built: {_first_line(cause)}") from None


def check_data(cfg: DictConfig) -> None:
    """The dataset's files are there (fetched now if data.download=true) and agree with the config: classes,
    image size, data.holdout below the training split's size."""
    from qbench.data import locate
    from qbench.data.loader import default_root, in_memory, load_splits

    if not in_memory(cfg.dataset):  # read by worker processes as it streams; its folders must be there
        root = cfg.data.root or default_root()
        for split in ("train", "test"):
            locate(cfg.dataset.name, root, split)
        return
    load_splits(cfg)


def check_init_run(run_dir: str, cfg: DictConfig) -> None:
    """``method.init`` must name a finished run of the same model and dataset whose weights fit this one."""
    run = Path(run_dir)
    if not (run / "config.yaml").is_file() or not (run / "checkpoints" / "last.pt").is_file():
        raise UserError(f"method.init={run_dir!r} is not a run directory with a checkpoint")
    status = json.loads((run / "summary.json").read_text()).get("status") if (run / "summary.json").is_file() else None
    if status != "completed":
        raise UserError(f"method.init={run_dir!r} has not finished (status {status or 'unknown'})")
    src = load_run_config(run)
    for key in ("model.name", "dataset.name"):
        if OmegaConf.select(src, key) != OmegaConf.select(cfg, key):
            raise UserError(f"method.init={run_dir!r} holds a different {key.split('.')[0]} "
                            f"({OmegaConf.select(src, key)!r}, this run: {OmegaConf.select(cfg, key)!r})")
    # the same model with other settings (widths, hidden sizes) would fail to load: find out now
    from qbench.build import build_model
    from qbench.methods.base import load_init_weights

    load_init_weights(build_model(cfg), run_dir)
