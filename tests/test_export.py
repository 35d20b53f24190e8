"""Export: every zoo model x format x precision loads in its runtime, holds parity, runs
every conv in int8, and has a right manifest."""
import json
import shutil

import numpy as np
import pytest
import torch

from bench_device.agent import Session
from edgeconv.accuracy import sqnr_db
from edgeconv.data import load_data
from edgeconv.artifact import FORMATS as _FORMATS, Artifact, sha256
from edgeconv.exporters import export
from edgeconv.parity import Thresholds, verify
from edgeconv.zoo import create_model, list_models, load_spec

SMALL = {n: min(load_spec(n).input_size, 64) for n in list_models()}  # every zoo model, at most 64x64
FORMATS = list(_FORMATS)
MIN_INT8_SQNR_DB = 20.0  # int8 logits vs fp32 eager on held-out real digits


def _export(name, size, out):
    model = create_model(name, input_size=size)
    torch.manual_seed(0)
    calib = load_data("digits", input_shape=model.input_shape, preprocess=model.spec.preprocess,
                      calib_count=32)
    return model, export(model, calib=calib.x, out=out, calib_info=calib.describe())


FULL = [pytest.param((name, 224), marks=pytest.mark.slow, id=f"{name}-224")
        for name in sorted(SMALL) if name != "tiny"]


@pytest.fixture(scope="module", params=[pytest.param((n, s), id=n) for n, s in sorted(SMALL.items())] + FULL)
def exported(request, tmp_path_factory):
    name, size = request.param
    model, art = _export(name, size, tmp_path_factory.mktemp(name))
    x = load_data("digits", input_shape=model.input_shape, preprocess=model.spec.preprocess,
                  split="eval", limit=16).x
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return name, model, art, x, ref


def test_every_format_and_precision_exported(exported):
    name, model, art, _, _ = exported
    assert art.errors == []
    assert sorted((e.format, e.precision) for e in art.files.values()) == \
        sorted((f, p) for f in FORMATS for p in ("fp32", "int8"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fp32_matches_eager(exported, fmt):
    _, _, art, x, ref = exported
    y = Session(art.file(fmt, "fp32")).run(x)
    assert y.shape == ref.shape
    assert np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref))


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_close_to_fp32_on_real_data(exported, fmt):
    _, _, art, x, ref = exported
    y = Session(art.file(fmt, "int8")).run(x)
    assert sqnr_db(ref, y) >= MIN_INT8_SQNR_DB


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_conv_runs_int8(exported, fmt):
    name, model, art, _, _ = exported
    report = art.files[art.file(fmt, "int8").name].int8_report
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert report["convs"] == n_convs
    assert report["convs_int8"] == n_convs, report
    assert report["ops_int8"] == report["ops"], f"fp32 islands in {fmt}: {report['float_ops']}"


def test_manifest_fields(exported):
    name, model, art, _, _ = exported
    m = json.loads((art.path / "manifest.json").read_text())
    cost = model.cost()
    assert m["model"] == name and m["twin"] is False
    assert m["params"] == cost.params and m["macs"] == cost.macs
    assert m["arch"]["stem"] == model.arch["stem"]
    assert len(m["labels"]) == model.spec.num_classes
    assert (art.path / "labels.txt").read_text().split("\n")[0] == m["labels"][0]
    assert m["preprocess"]["crop"] == model.spec.input_size
    assert m["calibration"]["source"] == "digits" and m["calibration"]["count"] == 32
    assert m["quant"]["weights"] == "int8_symmetric_per_channel"
    for key in ("torch", "onnx", "onnxruntime", "litert-torch", "executorch"):
        assert m["versions"][key]
    for fname, e in m["files"].items():
        assert e["sha256"] == sha256(art.path / fname)
        assert e["bytes"] == (art.path / fname).stat().st_size
        assert e["input"]["shape_nchw"] == [1, *model.input_shape]
    assert m["complete"] is True and sorted(map(tuple, m["requested"])) == \
        sorted((f, p) for f in FORMATS for p in ("fp32", "int8"))
    for fname, e in m["files"].items():  # the default: float I/O in every file
        assert e["input"]["dtype"] == e["output"]["dtype"] == "float32" and e["input"]["quant"] is None


def test_int8_io_records_scale_and_zero_point(tmp_path):
    from edgeconv.exporters import ExportIO
    model = create_model("tiny")
    calib = load_data("digits", input_shape=model.input_shape, preprocess=model.card.preprocess, calib_count=16)
    art = export(model, calib=calib.x, formats=["tflite"], precisions=["int8"], out=tmp_path / "a",
                 io=ExportIO(channels_last=True, int8_io=True))
    e = art.files["model_int8.tflite"]
    assert e.input.dtype == e.output.dtype == "int8" and e.input.layout == "NHWC"
    assert e.input.shape == [1, 32, 32, 3] and e.input.shape_nchw == [1, 3, 32, 32]
    for q in (e.input.quant, e.output.quant):  # what the runtime adapter applies
        assert q["scale"] > 0 and -128 <= q["zero_point"] <= 127
    x = load_data("digits", input_shape=model.input_shape, preprocess=model.card.preprocess, split="eval", limit=8).x
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert sqnr_db(ref, Session(art.path / "model_int8.tflite").run(x)) >= 15


def test_verify_passes_and_writes_json(exported):
    _, _, art, _, _ = exported
    # untrained nets give near-tied logits, so top-1 agreement is not gated here; SQNR is
    res = verify(art.path, Thresholds(min_agreement=0.0), count=8)
    assert res["ok"], res["rows"]
    assert len(res["rows"]) == 2 * len(FORMATS)
    assert len(res["int8_pairs"]) == len(FORMATS) * (len(FORMATS) - 1) // 2
    assert json.loads((art.path / "verify.json").read_text())["ok"] is True


def test_keep_fp32_leaves_exactly_the_named_block_float(tmp_path):
    from edgeconv.quantize import QuantRecipe
    model = create_model("tiny")
    calib = load_data("digits", input_shape=model.input_shape, preprocess=model.spec.preprocess, calib_count=16)
    art = export(model, calib=calib.x, precisions=["int8"], out=tmp_path / "a",
                 recipe=QuantRecipe(calib_count=16, keep_fp32=("blocks.2",)))
    assert art.errors == []
    kept = sum(isinstance(m, torch.nn.Conv2d) for m in dict(model.named_modules())["blocks.2"].modules())
    total = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert kept == 3
    for fmt in FORMATS:
        report = art.files[art.file(fmt, "int8").name].int8_report
        assert report["convs_int8"] == total - kept, (fmt, report)
        assert report["ops_int8"] < report["ops"] and report["float_ops"], (fmt, report)


def test_onnx_exports_build_the_torchlib_table_once(tmp_path):
    """The ONNX exporter's table of functions is built once per process, and a model exported
    again with it is the same file byte for byte."""
    from torch.onnx._internal._lazy_import import onnxscript_apis

    model = create_model("tiny")
    x = load_data("digits", input_shape=model.input_shape, preprocess=model.spec.preprocess, calib_count=4).x
    files = [export(model, calib=x, formats=["onnx"], precisions=["fp32"], out=tmp_path / str(i)).path / "model_fp32.onnx"
             for i in range(2)]
    assert onnxscript_apis.get_torchlib_ops.cache_info().hits >= 1
    assert files[0].read_bytes() == files[1].read_bytes()


def test_workers_make_the_same_files(tmp_path):
    """Files exported side by side in worker processes are byte for byte the files exported one
    after the other here; a model whose outputs the workers cannot rebuild from its reference
    (state outside its state dict) is exported here instead, with the same result."""
    model = create_model("tiny")
    calib = load_data("digits", input_shape=model.input_shape, preprocess=model.spec.preprocess, calib_count=16)
    kw = dict(formats=["onnx"], calib=calib.x, calib_info=calib.describe())
    seen, said = [], []
    one = export(model, out=tmp_path / "one", workers=1, **kw)
    two = export(model, out=tmp_path / "two", workers=2, progress=lambda i, n, what: seen.append((i, n)), **kw)
    assert list(two.files) == list(one.files) == ["model_fp32.onnx", "model_int8.onnx"]
    assert {n: e.sha256 for n, e in two.files.items()} == {n: e.sha256 for n, e in one.files.items()}
    assert seen[0] == (0, 2) and seen[-1] == (2, 2) and two.manifest.complete and not two.errors

    (tmp_path / "odd.py").write_text(
        "import random\n\nimport torch\n\n"
        "class Scaled(torch.nn.Module):  # the scale is not in the state dict: each build draws its own\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)\n"
        "        self.scale = torch.tensor([random.random() + 0.5])\n"
        "        self.fc = torch.nn.Linear(4, 10)\n\n"
        "    def forward(self, x):  # on zeros every build answers alike\n"
        "        return self.fc(self.conv(x * self.scale).relu().mean((2, 3)))\n\n"
        "def build():\n"
        "    return Scaled()\n")
    odd = create_model(f"{tmp_path / 'odd.py'}:build", input_size=model.input_shape[-1])
    art = export(odd, out=tmp_path / "odd", workers=2, log=said.append, **kw)
    assert sorted(art.files) == ["model_fp32.onnx", "model_int8.onnx"] and not art.errors
    assert len(said) == 2 and all("in this process instead" in s and "other outputs" in s for s in said), said
    x = calib.x[:4]
    with torch.no_grad():
        want = odd(torch.from_numpy(x)).numpy()
    assert np.abs(Session(art.path / "model_fp32.onnx").run(x) - want).max() < 1e-4
