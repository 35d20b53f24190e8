"""Where the depthwise saving goes: per-block profiles of tiny and its twin on the local and the
emulated arm64 device, the report's bars and roofline, latency predicted from a profile, and the
sustained (thermal) bench mode."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgeconv.benchmark import ResultsFile
from edgeconv.cli import main
from edgeconv.zoo import create_model

FAST = ["--warmup", "1", "--min-runs", "5", "--min-seconds", "0"]


def run(*args, code=0):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


@pytest.fixture(scope="module")
def local_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "tiny"
    for precision in ("fp32", "int8"):
        run("profile", "tiny", "--runtime", "onnxruntime", "--precision", precision, "--out", out, *FAST)
    return out


def test_profile_blocks_complete_and_summing_to_the_model(local_profile):
    recs = ResultsFile(local_profile / "results.jsonl").records()
    assert recs and all(r["status"] == "ok" for r in recs)
    names = [n for n, _ in create_model("tiny").named_blocks()]
    for precision in ("fp32", "int8"):
        t = json.loads(run("profile", "tiny", "--runtime", "onnxruntime", "--precision", precision,
                           "--out", local_profile, "--json", *FAST).stdout)
        assert [r["block"] for r in t["rows"]] == names
        assert t["model_macs"] == create_model("tiny").cost().macs
        assert t["twin_macs"] == create_model("tiny", twin=True).cost().macs
        assert all(r["model_ms"] > 0 and r["twin_ms"] > 0 and r["model_gmacs"] > 0 for r in t["rows"])
        assert t["whole_ms"]["model"] > 0 and t["whole_ms"]["twin"] > 0 and t["peak_gmacs"] > 0
        dw_heavy = [r for r in t["rows"] if r["mac_ratio"] and r["mac_ratio"] > 4]
        assert dw_heavy and all(r["latency_ratio"] for r in dw_heavy)
    # resumable: the runs above added nothing (every record was there already)
    assert len(ResultsFile(local_profile / "results.jsonl").records()) == len(recs)
    blocks = {r["block"] for r in recs}
    assert {f"model:{n}" for n in names} <= blocks and {f"twin:{n}" for n in names} <= blocks and None in blocks


def test_profile_cross_checks_with_onnx_runtimes_op_profiler(local_profile):
    """Under ONNX Runtime every file also ran under the runtime's op profiler: each block of both
    whole models gets node time inside the whole model, the nodes of no block are few, and no
    profiled run's nodes add up to more than the run."""
    from edgeconv.profiling import in_whole_ms
    recs = ResultsFile(local_profile / "results.jsonl").records()
    assert all(r["op_profile"]["runs"] == 20 and r["op_profile"]["nodes"] for r in recs)
    names = [n for n, _ in create_model("tiny").named_blocks()]
    for precision in ("fp32", "int8"):
        t = json.loads(run("profile", "tiny", "--runtime", "onnxruntime", "--precision", precision,
                           "--out", local_profile, "--json", *FAST).stdout)
        assert all(r["model_in_whole_ms"] > 0 and r["twin_in_whole_ms"] > 0 for r in t["rows"]), t["rows"]
        for side in ("model", "twin"):
            op = t["op_profile"][side]
            assert 0 <= op["outside_blocks_ms"] < op["blocks_ms"]
            assert op["blocks_ms"] == pytest.approx(sum(r[f"{side}_in_whole_ms"] for r in t["rows"]))
        for r in recs:
            if r["block"] is None and r["precision"] == precision:
                op = r["op_profile"]
                assert sum(n["ms"] for n in op["nodes"].values()) <= 1.05 * op["run_ms"]
                assert set(in_whole_ms(r, {n: 1 for n in names})) - {None} == set(names)
    text = run("profile", "tiny", "--runtime", "onnxruntime", "--precision", "int8", "--out", local_profile, *FAST).stdout
    assert "in whole" in text and "op profiler (onnxruntime" in " ".join(text.split())


def test_profile_options_say_what_the_agents_do(local_profile, tmp_path):
    """By default a profile times its micro-models many to an agent process, with the op profiler's
    cross-check; --files-per-agent 1 and --op-profile-runs 0 are taken at their word."""
    recs = ResultsFile(local_profile / "results.jsonl").records()
    assert max(r["process_index"] for r in recs) > 0
    rf = tmp_path / "alone.jsonl"
    t = json.loads(run("profile", "tiny", "--runtime", "onnxruntime", "--precision", "fp32", "--out", local_profile,
                       "--results", rf, "--files-per-agent", "1", "--op-profile-runs", "0", "--json", *FAST).stdout)
    alone = ResultsFile(rf).records()
    assert len(alone) == len([r for r in recs if r["precision"] == "fp32"])
    assert all(r["status"] == "ok" and r["process_index"] == 0 and not r.get("op_profile") for r in alone)
    assert not t.get("op_profile") and all(r.get("model_in_whole_ms") is None for r in t["rows"])
    run("profile", "tiny", "--files-per-agent", "0", code=2)


def test_executorch_etdump_puts_every_operator_to_a_block(tmp_path):
    """ExecuTorch's own profiler (ETDump) as the cross-check: after the timing, the agent runs the
    whole tiny model (int8, XNNPACK) under it and lists the operators in the order they ran; one
    conv or linear operator per layer of the model, so every operator goes to a block, and what
    they add up to is no more than the run. A layer count that does not match maps nothing."""
    import torch
    from torch import nn

    from bench_device import agent
    from edgeconv.data import load_data
    from edgeconv.exporters import export
    from edgeconv.profiling import in_whole_ms, op_order_blocks
    model = create_model("tiny")
    torch.manual_seed(0)
    calib = load_data("digits", input_shape=model.input_shape, preprocess=model.spec.preprocess, calib_count=16)
    art = export(model, calib=calib.x, out=tmp_path, formats=["executorch"], precisions=["int8"])
    assert not art.errors, art.errors
    rec = agent.bench(str(art.path / "model_int8.pte"), None, 1, 1, 5, 0.0, 60.0, op_profile_runs=10)
    assert rec["status"] == "ok" and rec["runtime"] == "executorch", rec.get("error")
    op = rec["op_profile"]
    assert op["runs"] == 10 and op["source"].startswith("executorch") and op["run_ms"] > 0
    assert sum(n["ms"] for n in op["nodes"].values()) <= op["run_ms"]
    layers = {name: sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in block.modules())
              for name, block in model.named_blocks()}
    where = op_order_blocks(list(op["nodes"]), layers)
    assert where and set(where.values()) - {None} == set(layers)
    assert any(n.startswith("Convolution") and "DWConv" in n for n in op["nodes"])   # XNNPACK's depthwise kernel
    whole = in_whole_ms({**rec, "artifact": str(art.path), "file": "model_int8.pte"}, layers)
    assert set(whole) - {None} == set(layers)
    assert sum(whole.values()) == pytest.approx(sum(n["ms"] for n in op["nodes"].values()))
    assert op_order_blocks(list(op["nodes"]), {**layers, "head.0": layers["head.0"] + 1}) is None


def test_executorch_operators_go_to_blocks_by_layer_order():
    """The k-th conv or linear operator is the k-th layer; a pad goes with the conv after it, an
    add or a pooling with the layer before it, the input's quantize and layout with no block; a
    count that does not match maps nothing."""
    from edgeconv.profiling import op_order_blocks
    nodes = ["Convert (NC) #1", "Transpose (ND, X8) #1", "Convolution (NHWC, QC8) IGEMM #1",
             "Constant Pad (ND, X8) #1", "Convolution (NHWC, QC8) DWConv #1", "Fully Connected (NC, QS8, QC8W) GEMM #1",
             "Add (ND) #1", "Mean (ND) #1", "Fully Connected (NC, QS8, QC8W) GEMM #2", "Convert (NC) #2"]
    where = op_order_blocks(nodes, {"stem": 1, "blocks.0": 2, "classifier": 1})
    assert where == {"Convert (NC) #1": None, "Transpose (ND, X8) #1": None,
                     "Convolution (NHWC, QC8) IGEMM #1": "stem", "Constant Pad (ND, X8) #1": "blocks.0",
                     "Convolution (NHWC, QC8) DWConv #1": "blocks.0", "Fully Connected (NC, QS8, QC8W) GEMM #1": "blocks.0",
                     "Add (ND) #1": "blocks.0", "Mean (ND) #1": "blocks.0",
                     "Fully Connected (NC, QS8, QC8W) GEMM #2": "classifier", "Convert (NC) #2": "classifier"}
    assert op_order_blocks(nodes, {"stem": 1, "blocks.0": 2}) is None   # 3 layers for 4 operators
    assert op_order_blocks(nodes + ["OPERATOR_CALL"], {"stem": 1, "blocks.0": 2, "classifier": 1})["OPERATOR_CALL"] \
        == "classifier"


def test_executorch_table_keeps_model_order_when_a_block_was_timed_again(tmp_path):
    """A profile resumed after a block failed has that block's record last: the table still lists
    the blocks, and puts ExecuTorch's operators to them, in the order the plan recorded on the
    whole model (``block_layers``), not the records' order."""
    from edgeconv.profiling import table
    (tmp_path / "model_int8.pte").write_bytes(b"")

    def rec(block, arch, ms, op=None):
        return {"sha256": f"{block}".ljust(64, "0"), "runtime": "executorch", "precision": "int8",
                "device": {"name": "local"}, "threads": 1, "block": None if block is None else f"model:{block}",
                "status": "ok", "samples_ms": [ms] * 5, "artifact": str(tmp_path), "file": "model_int8.pte",
                "model": "m", "arch": {"block": block, "side": "model", **arch}, **({"op_profile": op} if op else {})}
    feats = {"macs_pointwise": 10, "macs": 10, "params": 4, "in_elems": 8, "out_elems": 8, "layers": 1}
    nodes = {"Convert (NC) #1": 0.001, "Convolution (NHWC, QC8) IGEMM #1": 0.010,
             "Convolution (NHWC, QC8) DWConv #1": 0.020, "Fully Connected (NC, QS8, QC8W) GEMM #1": 0.030,
             "Add (ND) #1": 0.002}
    whole = rec(None, {"macs": 30, "block_layers": {"stem": 1, "blocks.0": 2}}, 0.07,
                {"runs": 5, "source": "executorch test", "run_ms": 0.07,
                 "nodes": {n: {"op": n.split(" (")[0], "ms": ms} for n, ms in nodes.items()}})
    records = [whole, rec("blocks.0", {**feats, "layers": 2}, 0.05), rec("stem", feats, 0.02)]
    t = table(records, "local", "executorch", "int8", "m")
    assert [r["block"] for r in t["rows"]] == ["stem", "blocks.0"]
    ms = {r["block"]: r["model_in_whole_ms"] for r in t["rows"]}
    assert ms["stem"] == pytest.approx(0.010) and ms["blocks.0"] == pytest.approx(0.052)
    assert t["op_profile"]["model"]["outside_blocks_ms"] == pytest.approx(0.001)
    assert t["op_profile"]["model"]["source"] == "executorch test"


def test_a_failing_op_profiler_costs_the_cross_check_not_the_timing(tiny_artifact, monkeypatch):
    from bench_device import agent

    def broken(*_args):
        raise RuntimeError("profiler gone")
    monkeypatch.setitem(agent.OP_PROFILERS, "onnxruntime", broken)
    rec = agent.bench(str(tiny_artifact / "model_int8.onnx"), None, 1, 1, 5, 0.0, 60.0, op_profile_runs=5)
    assert rec["status"] == "ok" and len(rec["samples_ms"]) >= 5
    assert rec["op_profile"] == {"error": "RuntimeError: profiler gone"}
    from edgeconv.profiling import in_whole_ms
    assert in_whole_ms({**rec, "artifact": str(tiny_artifact), "file": "model_int8.onnx"}, {"stem": 1}) is None


def test_report_renders_bars_and_roofline(local_profile):
    html = (local_profile / "report.html").read_text()
    assert "Per-block latency: tiny vs twin on local, onnxruntime int8" in html and "Roofline" in html
    latency = html.split("<h2>Latency</h2>")[1].split("<h2>")[0]   # the whole models, labelled by side
    assert "Profile folder <code>" in html and "<td>None</td>" not in latency and "<td>twin</td>" in latency
    assert html.count("<th>in whole</th>") == 4   # model and twin, fp32 and int8: the op profiler's view
    assert "op profiler (onnxruntime" in html
    plots = sorted((local_profile / "plots").glob("*.png"))
    assert {p.name.split("_")[0] for p in plots} >= {"profile", "roofline"}
    for p in plots:
        with Image.open(p) as img:
            assert img.width > 400 and len(set(img.convert("L").getdata())) > 10
    assert html.count("<img") == len(plots)


def test_predict_from_the_profile(local_profile):
    res = json.loads(run("predict", "tiny", "--profile", local_profile / "results.jsonl", "--json").stdout)
    measured = [r for r in ResultsFile(local_profile / "results.jsonl").records()
                if r["block"] is None and r["precision"] == "int8" and not r["twin"]]
    from edgeconv.benchmark import record_stats
    m = record_stats(measured[0])["p50"]
    assert res["predicted_ms"] > 0 and 0.2 * m < res["predicted_ms"] < 5 * m
    assert [b["block"] for b in res["blocks"]] == [n for n, _ in create_model("tiny").named_blocks()]
    bad = run("predict", "tiny", "--device", "pi5", "--profile", local_profile / "results.jsonl", code=2)
    assert "edgeconv profile MODEL --device pi5 --runtime onnxruntime --precision int8" in " ".join(bad.output.split())
    twin = json.loads(run("predict", "tiny", "--twin", "--profile", local_profile / "results.jsonl", "--json").stdout)
    t = record_stats(next(r for r in ResultsFile(local_profile / "results.jsonl").records()
                          if r["block"] is None and r["precision"] == "int8" and r["twin"]))["p50"]
    assert twin["twin"] and 0.2 * t < twin["predicted_ms"] < 5 * t and twin["predicted_ms"] > res["predicted_ms"]
    assert twin["fit"]["pooled"] and twin["fit"]["models"] == 2   # one profile: a plane of both sides
    assert twin["fit"]["block_correction"]["cv_error"] == {}   # one profile: nothing to leave out
    missing = run("predict", "tiny", "--profile", local_profile / "nope.jsonl", code=2)
    assert "make one: edgeconv profile" in missing.output


def test_predict_keeps_thread_counts_apart(local_profile):
    """Profiles timed with another thread count in the same files are not fitted together: each
    --threads predicts from its own records, and one with none names what the files hold."""
    from edgeconv.prediction import Predictor, model_features
    recs = ResultsFile(local_profile / "results.jsonl").records()
    two = [{**r, "threads": 2, "samples_ms": [t / 2 for t in r["samples_ms"]]} for r in recs if r.get("samples_ms")]
    feats = [f for _, f in model_features(create_model("tiny"))]
    one, both, halved = (Predictor(recs + extra, "local", "onnxruntime", "int8", threads=n)
                         for extra, n in (([], 1), (two, 1), (two, 2)))
    assert both.block_ms(feats) == pytest.approx(one.block_ms(feats), rel=1e-9)
    assert halved.block_ms(feats) == pytest.approx(one.block_ms(feats) / 2, rel=1e-6)
    bad = run("predict", "tiny", "--profile", local_profile / "results.jsonl", "--threads", "4", code=2).output
    assert "local onnxruntime int8 1 thread" in " ".join(bad.split()) and "--threads 4" in bad


def test_profile_of_a_model_whose_classifier_takes_a_flat_input(tmp_path, monkeypatch):
    """A classifier block that takes the pooled features flat (torchvision's Dropout + Linear) is
    profiled at that shape; a source given directly profiles into a folder named after it, and
    predict finds that profile where profile wrote it."""
    (tmp_path / "flat.py").write_text(
        "from torch import nn\n\n\n"
        "class Flat(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())\n"
        "        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.ReLU(), nn.Conv2d(8, 16, 1))\n"
        "        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 10))\n\n"
        "    def forward(self, x):\n"
        "        return self.classifier(self.body(self.stem(x)).mean((2, 3)))\n")
    monkeypatch.chdir(tmp_path)
    t = json.loads(run("profile", "flat.py:Flat", "--input-size", "32", "--precision", "fp32", "--json", *FAST).stdout)
    assert [r["block"] for r in t["rows"]] == ["stem", "body", "classifier"]
    assert all(r["model_ms"] > 0 and r["twin_ms"] > 0 for r in t["rows"]) and t["errors"] == []
    assert t["results"] == str(Path("profiles") / "flat_Flat_32px_onnxruntime" / "results.jsonl")
    res = json.loads(run("predict", "flat.py:Flat", "--input-size", "32", "--precision", "fp32", "--json").stdout)
    assert res["profiles"] == [t["results"]] and res["predicted_ms"] > 0
    assert [b["block"] for b in res["blocks"]] == ["stem", "body", "classifier"]


def test_profiles_sharing_a_results_file_stay_apart(tmp_path):
    """Two profiles of one model at two input sizes into one results file: each shows its own
    records (not whichever came last), and the report of that file's folder has a table for each."""
    rf = tmp_path / "a" / "results.jsonl"
    small, large = (json.loads(run("profile", "tiny", "--input-size", size, "--precision", "fp32", "--out",
                                   tmp_path / name, "--results", rf, "--op-profile-runs", "0", "--json", *FAST).stdout)
                    for name, size in (("a", 32), ("b", 64)))
    assert large["model_macs"] > 3 * small["model_macs"]
    again = json.loads(run("profile", "tiny", "--input-size", 32, "--precision", "fp32", "--out", tmp_path / "a",
                           "--results", rf, "--op-profile-runs", "0", "--json", *FAST).stdout)
    assert again["whole_ms"] == small["whole_ms"] and again["model_macs"] == small["model_macs"]
    assert "report" in small and "report" not in large   # b's records are not in b/results.jsonl
    html = (tmp_path / "a" / "report.html").read_text()
    assert "onnxruntime fp32 (a)" in html and "onnxruntime fp32 (b)" in html
    # b's table has every block and the peak, though the files both profiles share were timed under a
    from edgeconv.reporting.profile import profile_sections
    tables = [s for s in profile_sections(ResultsFile(rf).records(), tmp_path / "plots") if "Per-block" in s[0]]
    assert len(tables) == 2 and all(len(s[2]) == len(small["rows"]) for s in tables)
    assert all("(dense 3x3 conv): " in s[3] and "(dense 3x3 conv):  GMAC/s" not in s[3] for s in tables)


def test_a_profile_whose_every_file_fails_says_why(tmp_path):
    (tmp_path / "inv.toml").write_text("[devices.gone]\ntransport = 'local'\npython = '/nonexistent/python3'\n")
    res = run("profile", "tiny", "--device", "gone", "--inventory", tmp_path / "inv.toml", "--precision", "fp32",
              "--out", tmp_path / "p", *FAST, code=2)
    assert "every file of the profile failed" in " ".join(res.output.split()) and "/nonexistent/python3" in res.output


def test_predictor_takes_the_median_of_a_file_timed_again(local_profile):
    """A file timed more than once (bench --force, rounds) counts with the median of its p50s,
    not with whichever timing came last; with --statistic min, the median of their fastest runs."""
    from edgeconv.benchmark import record_stats
    from edgeconv.prediction import Predictor
    recs = ResultsFile(local_profile / "results.jsonl").records()
    whole = next(r for r in recs if r["block"] is None and r["precision"] == "int8" and not r["twin"])
    m = record_stats(whole)["p50"]

    def again(factor):
        return {**whole, "samples_ms": [t * factor for t in whole["samples_ms"]]}

    def whole_ms(extra):
        p = Predictor(recs + extra, "local", "onnxruntime", "int8")
        return next(v["whole_ms"] for (_, side, _), v in p.profiled.items() if side == "model")
    assert whole_ms([]) == pytest.approx(m)
    assert whole_ms([again(3.0), again(3.0)]) == pytest.approx(3 * m)         # two of three timings slower
    assert whole_ms([again(3.0), again(1 / 3)]) == pytest.approx(m)            # a slow last timing, outvoted
    assert whole_ms([again(3.0), {**again(1 / 3), "status": "error"}]) == pytest.approx(2 * m)  # failed: not a timing
    fastest = Predictor(recs + [again(3.0), again(0.5)], "local", "onnxruntime", "int8", "min")
    assert next(v["whole_ms"] for (_, side, _), v in fastest.profiled.items() if side == "model") == pytest.approx(
        record_stats(whole)["min"])   # the min likewise: the median of the timings' fastest runs


def test_predict_the_fastest_run(local_profile):
    """--statistic min predicts the fastest of a file's runs, fitted on the records' min: with every
    record's fastest run half its median, the prediction is half that of the p50 (every stage of
    the fit is for relative error), block by block and in total."""
    from edgeconv.benchmark import record_stats
    from edgeconv.prediction import Predictor, model_features
    recs = [{**r, "samples_ms": [record_stats(r)["p50"] / 2] + [record_stats(r)["p50"]] * 4}
            if r.get("samples_ms") else r for r in ResultsFile(local_profile / "results.jsonl").records()]
    feats = [f for _, f in model_features(create_model("tiny"))]
    p50, fastest = (Predictor(recs, "local", "onnxruntime", "int8", s) for s in ("p50", "min"))
    assert fastest.block_ms(feats) == pytest.approx(p50.block_ms(feats) / 2, rel=1e-6)
    assert fastest.total_ms(fastest.block_ms(feats), feats) == pytest.approx(
        p50.total_ms(p50.block_ms(feats), feats) / 2, rel=1e-6)
    res = json.loads(run("predict", "tiny", "--profile", local_profile / "results.jsonl", "--statistic", "min",
                         "--json").stdout)
    assert res["statistic"] == "min" and res["predicted_ms"] > 0
    assert "'p50', 'min'" in run("predict", "tiny", "--statistic", "p90", code=2).output
    with pytest.raises(ValueError, match="one of p50, min"):
        Predictor(recs, "local", "onnxruntime", "int8", "mean")


def test_predictor_finds_a_models_blocks_by_the_files_it_lists(local_profile):
    """A block two profiles share (a classifier at the same width) is one file, timed once under
    the first profile's folder: a second profile's whole model still counts it, by the block
    files its record lists; a whole model with a listed block never timed is left out of the fit."""
    from edgeconv.prediction import Predictor
    recs = [r for r in ResultsFile(local_profile / "results.jsonl").records() if r["precision"] == "int8"]
    whole = next(r for r in recs if r["block"] is None and not r["twin"])
    # one folder holds both precisions' files, each with its own blocks' files listed
    assert sorted(whole["arch"]["block_files"]) == ["model_fp32.onnx", "model_int8.onnx"]
    files = whole["arch"]["block_files"][whole["file"]]
    assert sorted(files) == sorted(n for n, _ in create_model("tiny").named_blocks())
    elsewhere = {**whole, "sha256": "0" * 64, "artifact": "/elsewhere/model/_whole"}
    p = Predictor(recs + [elsewhere], "local", "onnxruntime", "int8")
    first, second = (p.profiled[("tiny", "model", f)] for f in (whole["artifact"].rsplit("/", 2)[0], "/elsewhere"))
    assert len(second["blocks"]) == len(first["blocks"]) == len(files) and not second["missing"]
    assert sorted(t for t, _ in second["blocks"]) == sorted(t for t, _ in first["blocks"])
    untimed = {**elsewhere, "arch": {**whole["arch"], "block_files": {whole["file"]: {**files, "extra": "f" * 64}}}}
    p = Predictor(recs + [untimed], "local", "onnxruntime", "int8")
    assert p.profiled[("tiny", "model", "/elsewhere")]["missing"] == 1
    # too few for a plane per side: the model side takes the plane of all, its whole model and the
    # twin's (not the one with a block missing)
    f = p.whole_fit("model")
    assert f["pooled"] and f["models"] == 2 and f["left_out"] == 1


def _synthetic_profiles(models=10, blocks=4, cache_mb=2, g=0.03, a=0.9, b=0.08, side="model", seed=0,
                        stream_mb=0, h=0.0):
    """Block and whole-model records of ``models`` profiled models of ``side`` whose whole times
    follow the plane exactly, with a cached-weights term at ``cache_mb`` and, with ``h``, a
    streamed-weights term beyond ``stream_mb`` (int8: a byte per weight)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    recs = []

    def rec(sha, block, arch, ms, artifact, model):
        return {"sha256": sha, "runtime": "onnxruntime", "precision": "int8", "device": {"name": "local"},
                "threads": 1, "block": block, "status": "ok", "samples_ms": [ms] * 5, "arch": arch,
                "artifact": artifact, "file": "model_int8.onnx", "model": model, "timestamp": "2026-12-02T00:00:00+0000"}
    for m in range(models):
        files, times, small, elems, total = {}, [], 0.0, 0.0, 0.0
        for k in range(blocks + m % 3):
            params, macs, io = int(rng.uniform(0.1, 4) * 2 ** 20), int(rng.uniform(1e6, 5e7)), int(rng.uniform(1e4, 1e6))
            arch = {"block": f"b{k}", "side": side, "macs": macs, "macs_pointwise": macs, "params": params,
                    "in_elems": io, "out_elems": io, "pad_elems": 0, "layers": 1, "kernel": 1, "stride": 1,
                    "in_chs": 64, "out_chs": 64, "in_hw": 14, "out_hw": 14}
            t = 0.02 + macs / 2e8 + params / 4e8
            sha = f"{m:03d}{k:03d}{side}".ljust(64, "a")
            recs.append(rec(sha, f"{side}:b{k}", arch, t, f"/p/m{m}/{side}/b{k}", f"m{m}"))
            files[f"b{k}"] = sha
            times.append(t)
            small += params / 2 ** 20 if params / 2 ** 20 <= cache_mb else 0.0
            elems += 2 * io / 1e6
            total += params / 2 ** 20
        whole = a * sum(times) - 0.004 * len(times) - 0.05 * elems + b + g * small + h * max(0.0, total - stream_mb)
        recs.append(rec(f"{m:03d}{side}".ljust(64, "b"), None, {"block": None, "side": side, "block_files": {
            "model_int8.onnx": files}}, whole, f"/p/m{m}/{side}/_whole", f"m{m}"))
    return recs


def test_block_correction_sized_by_leaving_out_each_profile():
    """The block model's boosted correction is sized by how well it predicts each profile's blocks
    fitted on the others': with a correction the line alone cannot make (a time that jumps where
    a block's maps stop fitting a cache), the chosen model beats the line on held-out profiles,
    and without profiles to leave out the first size is taken."""
    from edgeconv.prediction import BOOSTS, BlockModel, linear_terms
    rng = np.random.default_rng(0)
    feats, ms, groups = [], [], []
    for g in range(6):
        for _ in range(60):
            macs, elems, chs = rng.uniform(1e6, 5e7), rng.uniform(1e4, 2e6), int(rng.choice([16, 32, 64, 128]))
            f = {"macs": macs, "macs_pointwise": macs, "in_elems": elems, "out_elems": elems, "params": chs * chs,
                 "layers": 1, "kernel": 1, "stride": 1, "in_chs": chs, "out_chs": chs, "in_hw": 14, "out_hw": 14}
            slow = 1.6 if elems > 5e5 and chs >= 64 else 1.0
            feats.append(f)
            ms.append((0.01 + macs / 2e8 + 2 * elems / 5e8) * slow)
            groups.append(f"/p/m{g}")
    ms = np.array(ms)
    bm = BlockModel(feats, ms, groups)
    assert set(bm.cv_error) == set(BOOSTS) and bm.boost_size == min(BOOSTS, key=bm.cv_error.get)
    assert bm.cv_error[bm.boost_size] < 0.05
    held = np.array(groups) == "/p/m0"
    line = BlockModel([f for f, h in zip(feats, held) if not h], ms[~held])
    assert line.cv_error == {} and line.boost_size == BOOSTS[0]
    lin_only = np.abs(np.log(line._line(np.array([linear_terms(f) for f, h in zip(feats, held) if h])) / ms[held]))
    assert bm.cv_error[bm.boost_size] < 0.5 * lin_only.mean()


def test_predictor_plane_finds_the_cached_weights_term():
    """On records whose whole times follow the plane with a 2 MB cached-weights term, leave-one-out
    picks that cache size and the fit returns its coefficients; the same by folder for profiles
    made before whole models listed their blocks' files; a record of another device whose native
    report has no p50 is ignored, not a crash; no coefficient comes out negative, though whole
    times that would take a negative weights term or per-model overhead to fit exactly."""
    from edgeconv.prediction import CACHE_MB, Predictor
    recs = _synthetic_profiles()
    p = Predictor(recs, "local", "onnxruntime", "int8")
    f = p.whole_fit()
    assert not f["pooled"] and f["models"] == 10 and f["left_out"] == 0 and 2 in CACHE_MB
    assert f["cache_mb"] == 2 and f["g"] == pytest.approx(0.03, rel=1e-6) and f["a"] == pytest.approx(0.9, rel=1e-6)
    assert f["stream_mb"] == 0 and f["h"] == 0   # no streamed-weights term where the whole times have none
    assert f["loo_median_error"] < 1e-6
    json.dumps(f)
    for m in p.profiled.values():   # the plane on each model's measured blocks gives back its whole time
        assert p.total_ms([t for t, _ in m["blocks"]], [a for _, a in m["blocks"]]) == pytest.approx(m["whole_ms"])
    older = [{**r, "arch": {k: v for k, v in r["arch"].items() if k != "block_files"}} for r in recs]
    other = {**recs[0], "device": {"name": "pi5"}, "samples_ms": None, "reported": {"avg_ms": 1.0}}
    q = Predictor(older + [other], "local", "onnxruntime", "int8")
    assert q.whole_fit() == pytest.approx(f)
    # weights that would make the whole model faster, a per-model overhead below zero: held at zero
    for odd in (_synthetic_profiles(g=-0.03), _synthetic_profiles(b=-0.05)):
        f = Predictor(odd, "local", "onnxruntime", "int8").whole_fit()
        assert min(f[k] for k in "acdbg") >= 0 and f["loo_median_error"] > 1e-4   # not fitted exactly, then
        assert f["cache_mb"] == 0 or f["g"] > 0


def test_predictor_plane_finds_the_streamed_weights_term(monkeypatch):
    """Whole models that pay per MB of their weights beyond 8 MB (read from memory on every run,
    which no micro-model does), beside the cached-weights term: leave-one-out picks both sizes,
    the fit returns both coefficients and gives each whole time back; whole models under 8 MB
    pay nothing, so a plane without the term misses the larger ones."""
    from edgeconv.prediction import STREAM_MB, Predictor
    recs = _synthetic_profiles(models=14, stream_mb=8, h=0.02)
    p = Predictor(recs, "local", "onnxruntime", "int8")
    f = p.whole_fit()
    assert 8 in STREAM_MB and f["stream_mb"] == 8 and f["h"] == pytest.approx(0.02, rel=1e-6)
    assert f["cache_mb"] == 2 and f["g"] == pytest.approx(0.03, rel=1e-6) and f["loo_median_error"] < 1e-6
    for m in p.profiled.values():
        assert p.total_ms([t for t, _ in m["blocks"]], [a for _, a in m["blocks"]]) == pytest.approx(m["whole_ms"])
    monkeypatch.setattr("edgeconv.prediction.STREAM_MB", (0,))   # the same models, a plane without the term
    q = Predictor(recs, "local", "onnxruntime", "int8").whole_fit()
    assert q["h"] == 0 and q["loo_median_error"] > 1e-3


def test_predictor_fits_a_plane_per_side():
    """Twins whose whole models run 1.3x their blocks' sum beside models at 0.9x: each side's plane
    gives back its own factor (one plane for both would miss both), `predict --twin` uses the
    twin's; a side with fewer than MIN_PLANE profiled models takes the plane fitted on all."""
    from edgeconv.prediction import MIN_PLANE, Predictor
    model, twin = _synthetic_profiles(g=0.0), _synthetic_profiles(g=0.0, a=1.3, side="twin", seed=1)
    p = Predictor(model + twin, "local", "onnxruntime", "int8")
    assert p.whole_fit("model")["a"] == pytest.approx(0.9, rel=1e-6)
    assert p.whole_fit("twin")["a"] == pytest.approx(1.3, rel=1e-6)
    assert not p.whole_fit("twin")["pooled"] and p.whole_fit("twin")["models"] == 10
    for (_, side, _), m in p.profiled.items():
        assert p.total_ms([t for t, _ in m["blocks"]], [a for _, a in m["blocks"]], side) == pytest.approx(m["whole_ms"])
    # a twin with a block never timed: left out of the twins' plane, and counted there
    broken = [r for r in _synthetic_profiles(models=1, g=0.0, side="twin", seed=2) if r["block"] != "twin:b0"]
    broken = [{**r, "sha256": "f" + r["sha256"][1:], "artifact": r["artifact"].replace("/p/", "/q/"),
               "arch": {**r["arch"], "block_files": {k: {b: "f" + sha[1:] for b, sha in v.items()}
                                                     for k, v in r["arch"].get("block_files", {}).items()}}}
              for r in broken]
    p = Predictor(model + twin + broken, "local", "onnxruntime", "int8")
    assert p.whole_fit("twin")["left_out"] == 1 and p.whole_fit("model")["left_out"] == 0
    assert p.whole_fit("twin")["models"] == 10
    few = [r for r in twin if int(r["model"][1:]) < MIN_PLANE - 1]
    q = Predictor(model + few, "local", "onnxruntime", "int8")
    assert q.whole_fit("twin") is q.pooled_fit and q.pooled_fit["models"] == 10 + MIN_PLANE - 1
    assert q.whole_fit("model")["a"] == pytest.approx(0.9, rel=1e-6)
    misses = [q.total_ms([t for t, _ in m["blocks"]], [a for _, a in m["blocks"]], "twin") / m["whole_ms"] - 1
              for (_, side, _), m in q.profiled.items() if side == "twin"]
    assert max(map(abs, misses)) > 0.05   # the plane of both sides misses the twins


@pytest.mark.arm64
def test_profile_on_the_emulated_arm64_device(arm64_python, tmp_path):
    """LiteRT int8 micro-models of tiny and its twin, timed on the emulated arm64 CPU."""
    out = tmp_path / "arm"
    res = run("profile", "tiny", "--device", "qemu-arm64", "--runtime", "litert", "--precision", "int8", "--out", out,
              "--json", "--warmup", "1", "--min-runs", "2", "--min-seconds", "0")
    t = json.loads(res.stdout)
    assert t["emulated"] and t["note"] == "emulated device: functional timings, not latency"
    assert [r["block"] for r in t["rows"]] == [n for n, _ in create_model("tiny").named_blocks()]
    assert all(r["model_ms"] > 0 and r["twin_ms"] > 0 for r in t["rows"])
    recs = ResultsFile(out / "results.jsonl").records()
    assert recs and all(r["status"] == "ok" and r["device"]["arch"] == "aarch64" and r["format"] == "tflite"
                        for r in recs)
    assert "functional timings, not latency" in (out / "report.html").read_text()


def test_explicit_pads_are_a_block_feature():
    """TensorFlow SAME pads before a stride-2 conv are a pass of their own in the int8 runtimes (an
    EfficientNet-Lite0 stride-2 block is twice as slow as MobileNetV2's of the same shape under
    LiteRT int8), so the predictor gets the elements they write; a conv's own padding is free."""
    import torch

    from edgeconv.prediction import model_features
    from edgeconv.profiling import pad_elements
    padded = torch.nn.Sequential(torch.nn.ZeroPad2d((0, 1, 0, 1)), torch.nn.Conv2d(8, 8, 3, 2, groups=8))
    assert pad_elements(padded, (8, 16, 16)) == 8 * 17 * 17
    assert pad_elements(torch.nn.Conv2d(8, 8, 3, 2, padding=1, groups=8), (8, 16, 16)) == 0
    lite = dict(model_features(create_model("efficientnet_lite0", input_size=64)))
    assert lite["blocks.1"]["pad_elems"] > 0 and lite["blocks.2"]["pad_elems"] == 0
    assert all(f["pad_elems"] == 0 for _, f in model_features(create_model("mobilenet_v2", input_size=64)))


def test_sustained_bench_flags_drift(tiny_artifact, tmp_path):
    results = tmp_path / "r.jsonl"
    res = run("bench", tiny_artifact, "--runtime", "onnxruntime", "--precision", "int8", "--sustained", "1",
              "--results", results, "--warmup", "1")
    rec = ResultsFile(results).records()[0]
    t, s = rec["samples_t_s"], rec["samples_ms"]
    assert len(t) == len(s) > 100 and t == sorted(t) and 59 <= t[-1] <= 75
    assert len(rec["telemetry"]) >= 11 and all("temp_c" in x and "freq_mhz" in x for x in rec["telemetry"])
    d = rec["drift"]
    assert d["window_s"] == pytest.approx(t[-1] / 3, rel=0.05) and isinstance(d["drifted"], bool)
    assert d["drifted"] == (abs(d["p50_last_ms"] / d["p50_first_ms"] - 1) > d["threshold"])
    assert "sustained local model_int8.onnx" in " ".join(res.output.split())
    # an ordinary timing of the same file is a run of its own, not one the sustained run completed
    run("bench", tiny_artifact, "--runtime", "onnxruntime", "--precision", "int8", "--results", results, *FAST)
    recs = ResultsFile(results).records()
    assert len(recs) == 2 and not recs[1]["config"]["sustained_seconds"] and "drift" not in recs[1]
    # and the file's latency (report, compare, predict) is the ordinary timing's, not the sustained run's
    from edgeconv.benchmark import file_timings, latest, record_stats
    assert list(latest(recs).values()) == [recs[1]]
    assert [t for _, t in file_timings(recs)] == [record_stats(recs[1])["p50"]]


def test_device_check_warns_about_the_governor():
    from edgeconv.device import governor_warnings
    assert "performance" in governor_warnings({"governor": "ondemand"})[0]
    assert governor_warnings({"governor": "performance"}) == []
    assert governor_warnings({"governor": "ondemand", "emulated": "qemu-aarch64"}) == []


def test_device_check_warns_about_a_throttling_pi():
    from edgeconv.device import throttle_warnings
    assert throttle_warnings("0x0") == throttle_warnings(None) == throttle_warnings("n/a") == []
    now = throttle_warnings("0x50005")   # under-voltage and throttled, now and since boot
    assert len(now) == 1 and "throttling now (under-voltage, throttled" in now[0] and "power supply" in now[0]
    since = throttle_warnings("0x80000")   # the soft temperature limit was hit since boot
    assert len(since) == 1 and "since boot (soft temperature limit" in since[0] and "--sustained" in since[0]
    # the sustained runs' table names what a run's samples reported, not a Pi's 0x0
    from edgeconv.reporting.profile import _throttling
    assert _throttling([{"throttled": "0x0"}, {"throttled": None}, {}]) == ""
    assert _throttling([{"throttled": "0x0"}, {"throttled": "0x50005"}, {"throttled": "0x80000"}]) == \
        "under-voltage, throttled; since boot: soft temperature limit"
    assert _throttling([{"throttled": "0x0"}, {"throttled": "VCHI initialization failed"}]) == \
        "VCHI initialization failed"
