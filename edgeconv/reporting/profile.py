"""Report sections for profiles (per-block latency of model and twin, the device's roofline) and
for sustained runs (latency, temperature and clock over time)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..cost import human


def _fmt(v, spec=".3f"):
    return "" if v is None else format(v, spec)


def profile_sections(records: list[dict], plots_dir: Path) -> list[tuple]:
    """(title, header, rows, note, [plot paths]) for every profile: profiled (device, runtime,
    model) with its thread count and folder (a results file may hold one model's profiles at
    several sizes)."""
    from ..profiling import profile_folder, table
    keys = sorted({(r["device"]["name"], r["runtime"], r.get("model"), r.get("threads") or 0, profile_folder(r))
                   for r in records if r.get("status") == "ok" and r.get("block") and isinstance(r.get("arch"), dict)
                   and r["arch"].get("side") in ("model", "twin")}, key=str)
    folders = Counter(k[:4] for k in keys)   # profiles of one (device, runtime, model, threads)
    out = []
    for device, runtime, model, threads, folder in keys:
        mine = _profile_records(records, threads, folder)
        tables = {}
        for precision in ("fp32", "int8"):
            try:
                tables[precision] = table(mine, device, runtime, precision, model)
            except ValueError:
                continue
        tag = (threads, Path(folder).name)
        where = (f", {threads} threads" if threads != 1 else "") + (
            f" ({Path(folder).name})" if folders[(device, runtime, model, threads)] > 1 else "")
        for precision, t in tables.items():
            op = t.get("op_profile") or {}
            # with an op profile, each side's block time inside its whole model beside its micro-model's
            rows = [[r["block"], r["kind"], human(r["macs"]), human(r["weight_bytes"], "B"), human(r["act_bytes"], "B"),
                     _fmt(r["model_ms"]), *([_fmt(r.get("model_in_whole_ms"))] if op else []),
                     _fmt(r["twin_ms"]), *([_fmt(r.get("twin_in_whole_ms"))] if op else []),
                     _fmt(r["latency_ratio"], ".2f"), _fmt(r["mac_ratio"], ".2f"),
                     _fmt(r["model_gmacs"], ".2f"), _fmt(r["twin_gmacs"], ".2f")] for r in t["rows"]]
            w, s = t["whole_ms"], t["sum_of_blocks_ms"]
            note = (f"Each block exported alone at its real input shape and timed with the usual method. Whole model "
                    f"{_fmt(w['model'])} ms against a sum of blocks of {_fmt(s['model'])} ms; twin {_fmt(w['twin'])} "
                    f"against {_fmt(s['twin'])} ms. Device peak (dense 3x3 conv): {_fmt(t['peak_gmacs'], '.2f')} GMAC/s."
                    + (f" {t['note']}." if t["note"] else "")
                    + "".join(f" In whole ({side}): the block's operator times inside the whole model under the "
                              f"runtime's op profiler ({o.get('source')}; a cross-check, its overhead included), "
                              f"{_fmt(o['outside_blocks_ms'])} ms outside any block." for side, o in op.items()))
            plot = _bars(t, plots_dir / f"profile_{_slug(device, runtime, model, precision, *tag)}.png")
            out.append((f"Per-block latency: {model} vs twin on {device}, {runtime} {precision}{where}",
                        ["block", "kind", "MACs", "weights", "activations", "model ms", *(["in whole"] if op else []),
                         "twin ms", *(["in whole"] if op else []), "latency ratio", "MAC ratio", "model GMAC/s",
                         "twin GMAC/s"], rows, note, [plot]))
        if tables:
            roof = _roofline(tables, plots_dir / f"roofline_{_slug(device, runtime, model, *tag)}.png")
            out.append((f"Roofline: {device}, {runtime}{where}", ["precision", "peak GMAC/s (dense conv)"],
                        [[p, _fmt(t["peak_gmacs"], ".2f")] for p, t in tables.items()],
                        "Arithmetic intensity (MACs per byte of weights and activations moved) against achieved "
                        "GMAC/s for every block of the model and its twin: blocks far below the roof at low "
                        "intensity are memory-bound (depthwise), dense convs sit near it.", [roof]))
    return out


def _profile_records(records: list[dict], threads: int, folder: str) -> list[dict]:
    """The records of the profile in ``folder`` at ``threads``: its own, the files its whole
    models list that another profile timed first (a shared classifier), and the peak conv (one
    file however many profiles share it)."""
    from ..profiling import profile_folder
    at = [r for r in records if (r.get("threads") or 0) == threads]
    own = [r for r in at if profile_folder(r) == folder]
    listed = {(sha, f"{r['arch']['side']}:{name}") for r in own
              if r.get("block") is None and isinstance(r.get("arch"), dict)
              for files in (r["arch"].get("block_files") or {}).values() for name, sha in files.items()}
    return own + [r for r in at if profile_folder(r) != folder and ((r.get("sha256"), r.get("block")) in listed
                                                                  or (r.get("arch") or {}).get("side") == "peak")]


def _slug(*parts) -> str:
    return "_".join(str(p).replace("/", "-").replace(" ", "") for p in parts if p)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _bars(t: dict, path: Path) -> Path:
    plt = _plt()
    rows = t["rows"]
    fig, ax = plt.subplots(figsize=(max(7, 0.5 * len(rows) + 3), 3.8))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["model_ms"] or 0 for r in rows], 0.4, label="model")
    ax.bar([x + 0.2 for x in xs], [r["twin_ms"] or 0 for r in rows], 0.4, label="standard-conv twin")
    ax.set_xticks(list(xs), [r["block"] for r in rows], rotation=60, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency per block (ms)")
    ax.set_title(f"{t['model']} vs twin, block by block: {t['device']} {t['runtime']} {t['precision']}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _roofline(tables: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = {"fp32": "tab:blue", "int8": "tab:orange"}
    for precision, t in tables.items():
        for side, marker, key, inten in (("model", "o", "model_gmacs", "intensity"),
                                         ("twin", "^", "twin_gmacs", "twin_intensity")):
            pts = [(r[inten], r[key]) for r in t["rows"] if r.get(key) and r.get(inten)]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=colors[precision], alpha=0.75,
                           label=f"{side} blocks, {precision}")
        if t["peak_gmacs"]:
            ax.axhline(t["peak_gmacs"], color=colors[precision], ls="--", lw=1,
                       label=f"peak {precision} (dense conv) {t['peak_gmacs']:.1f} GMAC/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (MACs per byte moved)")
    ax.set_ylabel("achieved GMAC/s")
    first = next(iter(tables.values()))
    ax.set_title(f"roofline of {first['device']} ({first['runtime']}): {first['model']} and its twin")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _throttling(telemetry: list[dict]) -> str:
    """What a sustained run's throttling samples reported, by name: the conditions seen while it
    ran, then those only reported since boot (a Pi's 0x0, nothing)."""
    from ..device import THROTTLE_FLAGS, throttle_flags
    now, since, odd = set(), set(), set()
    for x in telemetry:
        flags = throttle_flags(x.get("throttled"))
        if flags is None:
            odd.add(str(x["throttled"]))   # not flags (a tool's error text): shown as it came
            continue
        now.update(flags[0])
        since.update(flags[1])
    parts = [", ".join(n for n in THROTTLE_FLAGS if n in now)] if now else []
    parts += [f"since boot: {', '.join(n for n in THROTTLE_FLAGS if n in since - now)}"] if since - now else []
    return "; ".join(parts + sorted(odd))


def sustained_sections(records: list[dict], plots_dir: Path) -> list[tuple]:
    """Latency and temperature over time for sustained runs, with the drift verdict."""
    recs = [r for r in records if r.get("status") == "ok" and r.get("samples_t_s")]
    if not recs:
        return []
    plt = _plt()
    fig, axes = plt.subplots(len(recs), 1, figsize=(9, 3.2 * len(recs)), squeeze=False)
    rows = []
    for ax, r in zip(axes[:, 0], recs):
        ax.plot(r["samples_t_s"], r["samples_ms"], lw=0.6, color="tab:blue")
        ax.set_ylabel("latency (ms)")
        ax.set_xlabel("time (s)")
        tele = [x for x in r.get("telemetry") or [] if x.get("temp_c") is not None]
        if tele:
            ax2 = ax.twinx()
            ax2.plot([x["t_s"] for x in tele], [x["temp_c"] for x in tele], color="tab:red", marker=".")
            ax2.set_ylabel("temperature (C)", color="tab:red")
        d = r.get("drift") or {}
        ax.set_title(f"{r['device']['name']} {r['file']} {r['runtime']} t{r['threads']}: "
                     + ("DRIFTED" if d.get("drifted") else "steady") + (f" ({100 * d['change']:+.1f}%)" if d else ""))
        rows.append([r["device"]["name"], r["file"], r["runtime"], str(r["threads"]),
                     f"{r['samples_t_s'][-1]:.0f}", _fmt(d.get("p50_first_ms")), _fmt(d.get("p50_last_ms")),
                     f"{100 * d['change']:+.1f}%" if d else "", "yes" if d.get("drifted") else "no",
                     str(max((x.get("temp_c") for x in tele), default="")),
                     _throttling(r.get("telemetry") or [])])
    plot = _save(fig, plots_dir / "sustained.png")
    return [("Sustained runs", ["device", "file", "runtime", "threads", "seconds", "p50 first ms", "p50 last ms",
                                "change", "drifted", "max temp C", "throttled"], rows,
             "Timed for minutes; p50 of the first and last window (a minute, or a third of shorter runs) held against "
             "the drift threshold: a warming or throttled device drifts.", [plot])]
