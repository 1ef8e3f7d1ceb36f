"""Finished runs on disk, grouped so that only runs of the same configuration are averaged together."""
from __future__ import annotations

import glob
import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from qbench.config import EXECUTION_KEYS, load_run_config

# what a run's configuration is without: where and how it executed, its seed (runs of several seeds are averaged)
NOT_THE_CONFIGURATION = ("seed", "resume", *EXECUTION_KEYS)


@dataclass
class Run:
    dir: Path
    summary: dict
    config: dict

    @property
    def completed(self) -> bool:
        return self.summary.get("status") == "completed"

    @property
    def segments(self) -> list[dict]:
        """The processes the run trained in: several when it was resumed, else the run as one."""
        return self.summary.get("segments") or [self.summary]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True)
    return out


def find_runs(patterns: list[str]) -> tuple[list[Run], list[Run]]:
    """(completed, not completed) runs in the run directories below the given folders or globs."""
    done, other = [], []
    seen = set()
    for pattern in patterns:
        for root in sorted(glob.glob(str(Path(pattern).expanduser()))):
            for s in sorted(Path(root).rglob("summary.json")):
                d = s.parent
                if d in seen or not (d / "config.yaml").is_file():
                    continue
                seen.add(d)
                run = Run(d, json.loads(s.read_text()), OmegaConf.to_container(load_run_config(d)))
                (done if run.completed else other).append(run)
    return done, other


@dataclass
class Group:
    config: dict                      # flattened config (JSON values), execution keys removed
    runs: list[Run] = field(default_factory=list)

    def values(self, key: str = "final_val_acc") -> list[float]:
        return [r.summary[key] for r in self.runs if r.summary.get(key) is not None]

    def mean_std(self, key: str = "final_val_acc") -> tuple[float | None, float | None]:
        v = self.values(key)
        if not v:
            return None, None
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

    def get(self, key: str):
        raw = self.config.get(key)
        return None if raw is None else json.loads(raw)


def identity(config: dict, summary: dict) -> dict:
    """What a run trained: its flattened config without the execution keys. A ``method.init`` path becomes the
    identity of the run it started from (recorded in summary.json at the start), so seeds that each started from
    their own seed's run of one configuration group together, wherever those runs now lie."""
    # a null setting is one a run made before the key existed did not have (trainer.steps_per_epoch): the same
    flat = {k: v for k, v in _flat(config).items() if k not in NOT_THE_CONFIGURATION and v != "null"}
    init = summary.get("init")
    if init and "method.init" in flat:
        flat["method.init"] = json.dumps(f"{init.get('row') or 'run'} (config {init['config']})")
    return flat


def init_record(run_dir: str | Path) -> dict:
    """summary.json's account of the run a run starts from (``method.init``): its folder, its reproduce row
    and a hash of its identity."""
    d = Path(run_dir).resolve()
    config = OmegaConf.to_container(load_run_config(d))
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
    digest = hashlib.sha1(json.dumps(identity(config, summary), sort_keys=True).encode()).hexdigest()[:12]
    return {"run": str(d), "row": (config.get("tags") or {}).get("row"), "config": digest}


def group_runs(runs: list[Run]) -> list[Group]:
    """One group per distinct configuration (everything but the seed and where it ran)."""
    groups: dict[str, Group] = {}
    for run in runs:
        flat = identity(run.config, run.summary)
        key = json.dumps(flat, sort_keys=True)
        groups.setdefault(key, Group(flat)).runs.append(run)
    return list(groups.values())


def differing_keys(groups: list[Group]) -> list[str]:
    keys = set().union(*(g.config for g in groups)) if groups else set()
    return sorted(k for k in keys if len({g.config.get(k) for g in groups}) > 1)
