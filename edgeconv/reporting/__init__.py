"""The run report: report.html (self-contained), report.md and PNG plots.

Built only from the files of a run folder (models.json, artifacts/*/manifest.json,
verify.json, accuracy.json, results.jsonl, run.json), so ``edgeconv report RUN_DIR`` can
rebuild it at any time.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..artifact import Artifact, ArtifactError, write_bytes_atomic, write_json_atomic
from ..benchmark import ResultsFile, compare_rows, latest, record_stats
from ..cost import human

SIDES = ("model", "twin")


# What the report reads of each file, for ``_matches``: a dict of keys (``?``: optional), a
# one-item list (every element), or types. A file that does not match is left out, named.
_NUM = (int, float)
_SCORE = (int, float, str)  # jsonable writes an infinite SQNR as "inf"
_BLOCK = {"name": str, "arch": str, "out_shape": list, "params": _NUM, "macs": _NUM}
_SIDE = {"name": str, "cost": {"params": _NUM, "macs": _NUM, "act_bytes": _NUM, "input_shape": list,
                               "blocks": [_BLOCK]}}
SHAPES = {
    "run.json": {"stages?": {}, "config?": {}},
    "models.json": {"model": _SIDE, "twin": _SIDE},
    "verify.json": {"rows?": [{"file": str, "ok": bool, "max_rel?": _NUM, "sqnr_db?": _SCORE, "agreement?": _NUM,
                               "error?": str}]},
    "accuracy.json": {"rows?": [{"runtime": str}], "data?": {}},
}
_SCORES = {"fp32": {"top1": _NUM, "top5": _NUM}, "int8": {"top1": _NUM, "top5": _NUM}, "agreement": _NUM,
           "sqnr_db": _SCORE, "delta_top1?": {"delta": _NUM, "ci_low": _NUM, "ci_high": _NUM}}


def _matches(obj, shape) -> bool:
    if isinstance(shape, dict):
        if not isinstance(obj, dict):
            return False
        for key, sub in shape.items():
            name = key.rstrip("?")
            if name not in obj:
                if key.endswith("?"):
                    continue
                return False
            if not _matches(obj[name], sub):
                return False
        return True
    if isinstance(shape, list):
        return isinstance(obj, list) and all(_matches(x, shape[0]) for x in obj)
    return isinstance(obj, shape) and not (isinstance(obj, bool) and shape in (_NUM, _SCORE))


def _load(path: Path, problems: list[str]):
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(f"{path.name} in {path.parent} is not valid JSON ({e}); left out")
        return None
    except OSError as e:
        problems.append(f"{path.name} in {path.parent} cannot be read ({e.strerror}); left out")
        return None
    shape = SHAPES[path.name]
    if path.name == "accuracy.json" and isinstance(data, dict) and isinstance(data.get("rows"), list):
        shape = {**shape, "rows": [{"runtime": str}]}
        if not all("error" in r or _matches(r, _SCORES) for r in data["rows"] if isinstance(r, dict)):
            shape = None
    if shape is None or not _matches(data, shape):
        problems.append(f"{path.name} in {path.parent} is not what edgeconv writes there (a key is missing or "
                        "of another type); left out")
        return None
    if path.name == "run.json" and not all(isinstance(v, dict) for v in (data.get("stages") or {}).values()):
        problems.append(f"{path.name} in {path.parent}: its stages are not records; left out")
        return None
    return data


def collect(run_dir: str | Path) -> dict:
    """Everything the report shows, read from the run folder's files alone; what cannot be read
    is left out and listed in ``problems``."""
    d = Path(run_dir)
    if not any((d / f).exists() for f in ("run.json", "artifacts", "results.jsonl")):
        raise FileNotFoundError(f"{d} is not a run folder (no run.json, artifacts/ or results.jsonl); make one with "
                                "`edgeconv run` (or `edgeconv profile --out`)")
    problems: list[str] = []
    data = {"dir": d, "run": _load(d / "run.json", problems) or {}, "models": _load(d / "models.json", problems) or {},
            "manifest": {}, "verify": {}, "accuracy": {}, "records": [], "problems": problems, "skipped_lines": 0}
    for side in SIDES:
        a = d / "artifacts" / side
        try:
            data["manifest"][side] = Artifact.load(a).manifest if (a / "manifest.json").exists() else None
        except ArtifactError as e:
            problems.append(f"{e}; its files are left out")
            data["manifest"][side] = None
        data["verify"][side] = _load(a / "verify.json", problems)
        data["accuracy"][side] = _load(a / "accuracy.json", problems)
    side_of_sha = {e.sha256: side for side in SIDES if data["manifest"][side]
                   for e in data["manifest"][side].files.values()}
    rf = ResultsFile(d / "results.jsonl")
    for rec in rf.records(warn=False):
        side = side_of_sha.get(rec.get("sha256"))
        if side:  # the run folder may have moved since: point at where its files are now
            rec["artifact"] = str(d / "artifacts" / side)
        data["records"].append(rec)
    data["skipped_lines"] = rf.skipped
    if rf.skipped:
        problems.append(f"results.jsonl: {rf.skipped} line(s) that are not records (torn, garbage or malformed) "
                        "were skipped")
    return data


def _db(v) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else str(v)


def _latest_ok(records):
    return [r for r in latest(records).values() if r.get("status") == "ok"]


def _compare(data: dict) -> list[dict]:
    d = data["dir"]
    if not all(data["manifest"].get(side) for side in SIDES):
        return []
    return compare_rows(data["records"], d / "artifacts" / "model", d / "artifacts" / "twin")


def _side_of(rec, d: Path) -> str | None:
    """model or twin: as a profile's record says (its whole models live in DIR/SIDE/_whole), else
    by the run folder's artifacts/SIDE the record's file is in."""
    arch = rec.get("arch")
    if isinstance(arch, dict) and arch.get("side") in SIDES:
        return arch["side"]
    art = Path(rec.get("artifact", "")).resolve()
    for side in SIDES:
        if art == (d / "artifacts" / side).resolve():
            return side
    return None


# -- plots --------------------------------------------------------------------------------------
def _plots(data: dict, out: Path) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out.mkdir(parents=True, exist_ok=True)
    plots = {}

    def save(fig, key: str, name: str) -> None:
        fig.tight_layout()
        plots[key] = out / name
        fig.savefig(plots[key], dpi=110)
        plt.close(fig)
    d = data["dir"]
    recs = [r for r in _latest_ok(data["records"]) if not r.get("block") and _side_of(r, d)]

    if recs:
        devices = sorted({r["device"]["name"] for r in recs})
        fig, axes = plt.subplots(len(devices), 1, figsize=(9, 3.6 * len(devices)), squeeze=False)
        for ax, dev in zip(axes[:, 0], devices):
            keys = sorted({(r["runtime"], r["precision"], r["threads"]) for r in recs if r["device"]["name"] == dev})
            width = 0.38
            for i, side in enumerate(SIDES):
                p50, err = [], []
                for k in keys:
                    r = next((r for r in recs if r["device"]["name"] == dev and _side_of(r, d) == side
                              and (r["runtime"], r["precision"], r["threads"]) == k), None)
                    s = record_stats(r) if r else {}
                    p50.append(s.get("p50") or 0)
                    err.append(max((s.get("p90") or 0) - (s.get("p50") or 0), 0))
                xs = [j + (i - 0.5) * width for j in range(len(keys))]
                ax.bar(xs, p50, width, yerr=[[0] * len(err), err], capsize=3,
                       label=f"{side}" + (" (standard-conv twin)" if side == "twin" else ""))
            ax.set_xticks(range(len(keys)), [f"{rt}\n{p} t{t}" for rt, p, t in keys], fontsize=8)
            ax.set_ylabel("latency p50 (ms), whisker p90")
            ax.set_title(f"latency on {dev}")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        save(fig, "latency", "latency.png")

        rows = _compare(data)
        if rows:
            fig, ax = plt.subplots(figsize=(9, 3.6))
            labels = [f"{r['device']}\n{r['runtime']} {r['precision']}" for r in rows]
            ax.bar(range(len(rows)), [r["latency_ratio"] for r in rows], color="tab:orange",
                   label="measured latency ratio (twin / model)")
            ax.axhline(rows[0]["mac_ratio"], color="tab:blue", ls="--", label=f"MAC ratio {rows[0]['mac_ratio']:.1f}x")
            ax.axhline(rows[0]["param_ratio"], color="tab:green", ls=":", label=f"param ratio {rows[0]['param_ratio']:.1f}x")
            ax.set_xticks(range(len(rows)), labels, fontsize=8)
            ax.set_ylabel("twin / model")
            ax.set_title("what depthwise-separable convs buy: standard-conv twin vs model")
            ax.legend(fontsize=8)
            save(fig, "twin", "twin_speedup.png")

    acc = [(side, r) for side in SIDES for r in (data["accuracy"].get(side) or {}).get("rows", [])
           if "error" not in r]
    if acc:
        fig, ax = plt.subplots(figsize=(9, 3.6))
        labels, f32, i8 = [], [], []
        for side, r in acc:
            labels.append(f"{side}\n{r['runtime']}")
            f32.append(100 * r["fp32"]["top1"])
            i8.append(100 * r["int8"]["top1"])
        xs = range(len(acc))
        ax.bar([x - 0.2 for x in xs], f32, 0.4, label="fp32 top-1")
        ax.bar([x + 0.2 for x in xs], i8, 0.4, label="int8 top-1")
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.set_ylim(max(0, min(f32 + i8) - 10), 100.5)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title("int8 vs fp32 on held-out data, per runtime")
        ax.legend(fontsize=8, loc="lower right")
        save(fig, "accuracy", "accuracy.png")

    models = data["models"]
    if models:
        fig, ax = plt.subplots(figsize=(9, 3.6))
        for side, color in zip(SIDES, ("tab:blue", "tab:orange")):
            blocks = models[side]["cost"]["blocks"]
            ax.plot(range(len(blocks)), [b["macs"] / 1e6 for b in blocks], marker="o", color=color,
                    label=f"{side}: {human(models[side]['cost']['macs'])} MACs, "
                          f"{human(models[side]['cost']['params'])} params")
        names = [b["name"] for b in models["model"]["cost"]["blocks"]]
        ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
        ax.set_ylabel("MMACs per block")
        ax.set_yscale("log")
        ax.set_title("cost per block")
        ax.legend(fontsize=8)
        save(fig, "cost", "cost.png")
    return plots


# -- tables -------------------------------------------------------------------------------------
def _tables(data: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, header, rows, note) for every section of the report."""
    d = data["dir"]
    sections = []
    models = data["models"]
    if models:
        m, t = models["model"]["cost"], models["twin"]["cost"]
        rows = [[side, human(c["params"]), human(c["macs"]), human(c["act_bytes"], "B")]
                for side, c in (("model", m), ("standard-conv twin", t))]
        rows.append(["twin / model", f"{t['params'] / m['params']:.2f}x", f"{t['macs'] / m['macs']:.2f}x", ""])
        sections.append(("Model and twin", ["", "params", "MACs", "activations"], rows,
                         f"{models['model']['name']} at input {m['input_shape']}; the twin replaces each "
                         "depthwise(-separable) stage with a standard conv of the same kernel, stride and channels."))
        for side in SIDES:
            c = models[side]["cost"]
            rows = [[b["name"], b["arch"], "x".join(map(str, b["out_shape"])), f"{b['params']:,}",
                     f"{b['macs']:,}", f"{100 * b['macs'] / c['macs']:.1f}%"] for b in c["blocks"]]
            sections.append((f"Per-block cost: {side}", ["block", "arch", "output", "params", "MACs", "share"],
                             rows, ""))
    recs = [r for r in _latest_ok(data["records"]) if not r.get("block")]
    whole = [r for r in data["records"] if not r.get("block")]
    if whole:
        rows = []
        for r in sorted(whole, key=lambda r: (r.get("device", {}).get("name", ""), r.get("runtime", ""),
                                                       r.get("precision", ""), str(_side_of(r, d)))):
            s = record_stats(r) if r.get("status") == "ok" else {}
            f = lambda v, spec=".2f": "" if v is None else format(v, spec)  # noqa: E731
            rows.append([r.get("device", {}).get("name", ""), str(_side_of(r, d)), r.get("runtime", ""),
                         r.get("precision", ""), str(r.get("threads", "")), f(s.get("p50")), f(s.get("p90")),
                         f(s.get("mean")), f(100 * s["cov"], ".1f") + "%" if s.get("cov") is not None else "",
                         str(s.get("n", "")), r.get("status", "") + (f": {r.get('error')}" if r.get("error") else "")])
        sections.append(("Latency", ["device", "side", "runtime", "precision", "threads", "p50 ms", "p90 ms",
                                     "mean ms", "CoV", "runs", "status"], rows,
                         "Statistics computed from the raw per-run samples in results.jsonl."))
        cmp = _compare(data)
        if cmp:
            rows = [[c["device"], c["runtime"], c["precision"], str(c["threads"]), f"{c['model_p50_ms']:.3f}",
                     f"{c['twin_p50_ms']:.3f}", f"{c['latency_ratio']:.2f}x", f"{c['mac_ratio']:.2f}x",
                     f"{c['param_ratio']:.2f}x"] for c in cmp]
            sections.append(("Twin speedup", ["device", "runtime", "precision", "threads", "model p50 ms",
                                              "twin p50 ms", "latency ratio", "MAC ratio", "param ratio"], rows,
                             "Latency ratio = twin p50 / model p50, beside the ratio of their MACs and params."))
    acc_rows = []
    for side in SIDES:
        acc = data["accuracy"].get(side)
        if not acc:
            continue
        for r in acc.get("rows", []):
            if "error" in r:
                acc_rows.append([side, r.get("runtime", ""), "", "", "", "", "", "", f"error: {r['error']}"])
                continue
            ci = r.get("delta_top1") or {}
            delta = f"{100 * ci.get('delta', 0):+.1f} [{100 * ci.get('ci_low', 0):+.1f}, {100 * ci.get('ci_high', 0):+.1f}]"
            acc_rows.append([side, r["runtime"], f"{100 * r['fp32']['top1']:.1f}", f"{100 * r['int8']['top1']:.1f}",
                             f"{100 * r['fp32']['top5']:.1f}", f"{100 * r['int8']['top5']:.1f}", delta,
                             f"{100 * r['agreement']:.1f}%", _db(r["sqnr_db"])])
    if acc_rows:
        info = (data["accuracy"].get("model") or {}).get("data", {})
        man = data["manifest"].get("model")
        recipe = f". int8 recipe: {man.recipe.describe()}." if man is not None and man.quant else ""
        sections.append(("Accuracy: int8 vs fp32", ["side", "runtime", "fp32 top-1", "int8 top-1", "fp32 top-5",
                                                   "int8 top-5", "int8-fp32 (95% CI), points", "agreement",
                                                   "logit SQNR dB"], acc_rows,
                         f"{info.get('count', '?')} evaluation images from {info.get('source', '?')}; "
                         f"{(info.get('calibration') or {}).get('how', '')}{recipe}"))
    size_rows = []
    for side in SIDES:
        man = data["manifest"].get(side)
        for name, e in (man.files.items() if man else ()):
            r = e.int8_report or {}
            size_rows.append([side, name, human(e.bytes, "B"), e.input.layout or "", e.input.dtype,
                              f"{r['ops_int8']}/{r['ops']}" if r else "", e.sha256[:12]])
    if size_rows:
        sections.append(("Model files", ["side", "file", "size", "input layout", "input dtype", "int8 ops", "sha256"],
                         size_rows, ""))
    ver_rows = []
    for side in SIDES:
        v = data["verify"].get(side) or {}
        for r in v.get("rows", []):
            ver_rows.append([side, r["file"], f"{r['max_rel']:.1e}" if "max_rel" in r else "",
                             _db(r["sqnr_db"]) if "sqnr_db" in r else "",
                             f"{100 * r['agreement']:.0f}%" if "agreement" in r else "",
                             "ok" if r["ok"] else f"FAIL {r.get('error', '')}"])
    if ver_rows:
        sections.append(("Parity (verify)", ["side", "file", "fp32 max rel err", "int8 SQNR dB vs eager",
                                             "int8 top-1 agreement", "verdict"], ver_rows, ""))
    env_rows = []
    man = data["manifest"].get("model")
    for k, v in (man.versions if man else {}).items():
        env_rows.append(["host package", k, str(v)])
    for dev in sorted({r["device"]["name"] for r in recs}):
        r = next(r for r in recs if r["device"]["name"] == dev)
        dv = r["device"]
        for k in ("arch", "cpu", "cores", "governor", "emulated", "temp_c_before", "temp_c_after", "throttled"):
            env_rows.append([f"device {dev}", k, str(dv.get(k))])
        env_rows.append([f"device {dev}", "runtimes", ", ".join(sorted({f"{x['runtime']} {x.get('runtime_version', '')}"
                                                                       for x in recs if x['device']['name'] == dev}))])
    if env_rows:
        sections.append(("Environment", ["where", "what", "value"], env_rows, ""))
    return sections


# -- writers ------------------------------------------------------------------------------------
PLOT_AFTER = {"Model and twin": "cost", "Latency": "latency", "Twin speedup": "twin",
              "Accuracy: int8 vs fp32": "accuracy"}

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;
border:1px solid #eee}.note{color:#555;font-size:13px}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em}"""


def report(run_dir: str | Path) -> dict:
    """``edgeconv report``: rebuild report.html (self-contained), report.md and the plots of a run
    folder from its files. Returns their paths, with ``skipped_lines`` (results lines that are not
    records) and ``problems`` (files left out, each with why)."""
    from .profile import profile_sections, sustained_sections
    data = collect(run_dir)
    d = data["dir"]
    plots = _plots(data, d / "plots")
    sections = [(*s, [plots[PLOT_AFTER[s[0]]]] if PLOT_AFTER.get(s[0]) in plots else []) for s in _tables(data)]
    extra = profile_sections(data["records"], d / "plots") + sustained_sections(data["records"], d / "plots")
    sections += extra
    plots.update({str(p): p for s in extra for p in s[4]})
    profiled = not data["run"] and any(r.get("block") for r in data["records"])
    title = (f"edgeconv report: {(data['models'].get('model') or {}).get('name', d.name)} vs its standard-conv twin"
             + (", block by block" if profiled else ""))
    stages = data["run"].get("stages", {})
    stage_line = ", ".join(f"{k} {v.get('seconds', '?')} s" for k, v in stages.items() if v.get("status") == "done")
    where = ("Profile folder {} (edgeconv profile)." if profiled else f"Run folder {{}}. Stages: {stage_line or 'n/a'}.")

    md = [f"# {title}", "", where.format(f"`{d}`"), ""]
    md += [f"> {p}" for p in data["problems"]] + ([""] if data["problems"] else [])
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
         f"<p class='note'>{html.escape(where).format(f'<code>{html.escape(str(d))}</code>')}</p>"]
    h += [f"<p class='note'><b>note:</b> {html.escape(p)}</p>" for p in data["problems"]]
    for name, header, rows, note, section_plots in sections:
        md += [f"## {name}", ""]
        if note:
            md += [note, ""]
        md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
        md.append("")
        h.append(f"<h2>{html.escape(name)}</h2>")
        if note:
            h.append(f"<p class='note'>{html.escape(note)}</p>")
        h.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>")
        h += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        h.append("</table>")
        for plot in section_plots:
            md += [f"![{name}](plots/{plot.name})", ""]
            b64 = base64.b64encode(plot.read_bytes()).decode()
            h.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>")
    h.append("</body></html>")
    paths = {"html": d / "report.html", "md": d / "report.md", "plots": sorted(str(p) for p in plots.values()),
             "skipped_lines": data["skipped_lines"], "problems": data["problems"]}
    write_bytes_atomic(paths["html"], "\n".join(h).encode())
    write_bytes_atomic(paths["md"], "\n".join(md).encode())
    write_json_atomic(d / "report.json", {"plots": paths["plots"], "sections": [s[0] for s in sections],
                                          "skipped_lines": data["skipped_lines"], "problems": data["problems"]})
    return paths
