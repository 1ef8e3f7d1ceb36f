"""Write configs/paper/<key>.yaml from ../shared/papers/paper_results.yaml, one figure per reported number.

Run once to (re)create the registry; `experiment:` blocks are then added by hand to rows qbench can run
(re-running overwrites them, so it refuses to touch a file that has any unless given --force).
Every figure keeps its provenance status; rows whose status the source gives only in a YAML comment
("# all status: primary (...)") get it from PAPER_STATUS below, which transcribes those comments.

    python scripts/import_paper_results.py [--source PATH] [--force]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# statuses the source states once per paper, in a comment above its rows
PAPER_STATUS = {"xnor_net": ("primary", "xnor_txt"), "wage": ("primary", "wage_txt"), "inq": ("primary", "inq_txt"),
                "twn": ("primary", "twn_v3"), "krishnamoorthi_whitepaper": ("primary", "kr_txt")}
KEYS = {"krishnamoorthi_whitepaper": "whitepaper"}  # registry key: the brief's short name
CONTEXT = ("ds", "arch", "bits", "variant", "framework", "method", "partition", "table", "desc")


def slug(*parts) -> str:
    s = "_".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def _parts(s: str) -> list[tuple[str | None, float]]:
    out = []
    for part in s.split(" / ") if " / " in s else s.split("/"):
        m = re.fullmatch(r"\s*(?:(\S+)\s+)?([-\d.]+)\s*", part)
        out.append((m.group(1), float(m.group(2))))
    return out


def _part_labels(values) -> list[str]:
    for v in values:
        if isinstance(v, str) and "/" in v and all(label for label, _ in _parts(v)):
            return [label for label, _ in _parts(v)]
    return ["part1", "part2", "part3", "part4"]


def flatten(paper: dict) -> tuple[list[dict], list[str]]:
    default_status, default_src = PAPER_STATUS.get(paper["key"], (None, None))
    figures, notes = [], []
    for row in paper.get("rows", []):
        ctx = {k: row[k] for k in CONTEXT if k in row}
        status = row.get("status", default_status)
        has_figures = any(k in row for k in ("value", "top1", "top5", "top1_err", "top5_err", "rows"))
        if status is None and has_figures:
            raise SystemExit(f"{paper['key']}: a row has no status and the paper no default: {row}")
        base = {"status": status, **({"source": default_src} if "status" not in row and default_src else {})}
        if "note" in row:
            base["note"] = row["note"]
        cols = row.get("cols")

        def add(label_parts, metric, value, pm=None):
            fig = {"id": slug(ctx.get("table"), ctx.get("ds"), ctx.get("arch"), ctx.get("bits"),
                              ctx.get("variant"), ctx.get("method"), ctx.get("partition"), *label_parts, metric),
                   **ctx, "metric": metric, "value": value, **base}
            if label_parts:
                fig["row"] = " ".join(str(p) for p in label_parts)
            if pm is not None:
                fig["pm"] = pm
            figures.append(fig)

        if "value" in row and isinstance(row["value"], str) and "/" in str(row.get("metric", "")):
            for m, x in zip(row["metric"].split("/"), row["value"].split("/")):
                add([], m.strip(), float(x))
        elif "value" in row:
            add([], row.get("metric", "acc"), row["value"], row.get("pm"))
        for m in ("top1", "top5", "top1_err", "top5_err"):
            if m in row:
                add([], m, row[m])
        if isinstance(row.get("rows"), dict):
            labels = _part_labels(row["rows"].values())
            for name, v in row["rows"].items():
                if isinstance(v, str) and "/" in v and "/" not in str(row.get("metric", "")):
                    # "62.9/39.4" beside "mAP50 76.8 / mAP50:95 51.5": labelled parts, labels shared by the row
                    for m, x in zip(labels, _parts(v)):
                        add([name], m, x[1])
                elif cols:
                    for c, x in zip(cols, v):
                        add([name, c], row.get("metric", "top1_fraction"), x)
                elif isinstance(v, str) and "/" in v and "/" in str(row.get("metric", "")):
                    for m, x in zip(row["metric"].split("/"), v.split("/")):
                        add([name], m.strip(), float(x))
                else:
                    add([name], row.get("metric", "acc"), v)
        if not has_figures:
            notes.append(row.get("note", "") + (f" [status: {status}]" if status else ""))
    ids = [f["id"] for f in figures]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise SystemExit(f"{paper['key']}: figure ids not unique: {sorted(dup)}")
    return figures, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared" / "papers" / "paper_results.yaml")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    src = yaml.safe_load(args.source.read_text())
    out_dir = REPO / "configs" / "paper"
    out_dir.mkdir(parents=True, exist_ok=True)
    for paper in src["papers"]:
        key = KEYS.get(paper["key"], paper["key"])
        path = out_dir / f"{key}.yaml"
        if path.exists() and re.search(r"^\s+experiment:", path.read_text(), re.M) and not args.force:
            print(f"skip {path.name}: it has hand-written experiments (use --force)")
            continue
        figures, notes = flatten(paper)
        doc = {"key": key, "source_key": paper["key"], "cite": paper["cite"],
               "arxiv": (re.findall(r"arXiv:(\d{4}\.\d{4,5})", paper["cite"]) or [None])[0],
               "figures": figures, "notes": notes}
        for extra in ("table", "version_note", "confidence", "recipe", "method", "threshold_rule", "blocks",
                      "vgg9_arch", "reproduction_refs"):
            if extra in paper:
                doc[extra] = paper[extra]
        header = (f"# {key}: reported figures, generated by scripts/import_paper_results.py from the shared\n"
                  f"# paper_results.yaml. status: primary | repo | slides | secondary | unconfirmed (never shown\n"
                  f"# as confirmed). Add `experiment:` to a figure to say which qbench run reproduces it.\n")
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110))
        print(f"wrote {path.relative_to(REPO)}: {len(figures)} figures, {len(notes)} notes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
