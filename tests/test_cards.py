"""Your own model through every verb: classifiers written in plain torch (examples/own_model/nets.py)
and the PyPI reference EfficientNet-Lite0, described by model cards; their standard-conv twin
made by the generic rule; bad cards and sources refused with named errors, nothing written."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeconv.artifact import Artifact
from edgeconv.cli import main
from edgeconv.zoo import create_model

REPO = Path(__file__).resolve().parent.parent
CARDS = REPO / "examples" / "own_model"
FAST = ["--warmup", "1", "--min-runs", "3", "--min-seconds", "0"]


def run(*args, code=0):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


def dense_macs(row_model, conv):
    """The formula for the twin's dense conv: k x k x C_in x C_out x H_out x W_out."""
    kh, kw = conv.kernel_size
    c, h, w = row_model["out_shape"]
    return kh * kw * conv.in_channels * conv.out_channels * h * w


@pytest.fixture(scope="module", params=["mobilenet_v2ish", "shufflenetish"])
def trained_card(request, tmp_path_factory):
    """A card model trained briefly on digits, exported to every format and precision."""
    root = tmp_path_factory.mktemp(request.param)
    card = CARDS / f"{request.param}.toml"
    run("train", card, "--epochs", "3", "--out", root / "w.pt")
    run("export", card, "--weights", root / "w.pt", "--out", root / "art")
    return request.param, card, root


def test_info_counts_every_conv_and_the_twin_by_formula(trained_card):
    name, card, _ = trained_card
    res = json.loads(run("info", card, "--json").stdout)
    model = create_model(card)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    rows = {r["name"]: r for r in res["cost"]["blocks"]}
    assert set(convs) <= set(rows) and any(r["kind"] == "depthwise" for r in rows.values())
    if name == "shufflenetish":
        assert any(r["kind"] == "grouped" for r in rows.values())
    from edgeconv.cost import count_macs
    assert res["cost"]["macs"] == count_macs(model, model.input_shape)
    twin_rows = {r["name"]: r for r in res["twin_cost"]["blocks"]}
    for path, conv in convs.items():
        assert twin_rows[path]["macs"] == dense_macs(rows[path], conv), path
        assert twin_rows[path]["kind"] in ("standard", "pointwise")
    assert res["twin_cost"]["macs"] > 3 * res["cost"]["macs"]
    out = run("info", card).output
    assert "depthwise" in out and "twin / model" in out


def test_exported_every_conv_int8_verified_and_checked(trained_card):
    name, card, root = trained_card
    art = Artifact.load(root / "art")
    assert art.manifest.complete and not art.errors and len(art.files) == 6
    assert art.manifest.source["kind"] == "card" and art.manifest.source["source"].endswith("nets.py:" + name)
    assert not list(art.path.glob("*.pkl")) and (art.path / "reference.pt").exists()
    torch.load(art.path / "reference.pt", weights_only=True)  # a state dict: loads without running code
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in create_model(card).modules())
    # ExecuTorch 1.5.1's XNNPACK partitioner has no int8 average pooling (AvgPoolingConfig: fp32 only):
    # the ShuffleNet unit's shortcut pool, and the zero pad before it, run in fp32 inside the delegate
    upstream = {"avg_pool2d (fp32 inside XNNPACK)", "constant_pad_nd (fp32 inside XNNPACK)"}
    for e in art.files.values():
        if e.precision == "int8":
            r = e.int8_report
            assert r["convs"] == r["convs_int8"] == n_convs, (e.format, r)
            if e.format == "executorch" and name == "shufflenetish":
                assert set(r["float_ops"]) == upstream and r["ops_int8"] == r["ops"] - sum(r["float_ops"].values())
            else:
                assert r["ops_int8"] == r["ops"], (e.format, r["float_ops"])
    run("verify", root / "art")
    # all 500 held-out digits: on 200, one image is 0.5 points, and three flipped images (ONNX Runtime
    # int8 on an AVX-512 VNNI CPU: -1.5 [-3.2, +0.2]) crossed the 1-point gate; on 500 the same files: -0.8
    res = run("check", root / "art", "--data", "digits")
    acc = json.loads((root / "art" / "accuracy.json").read_text())
    assert acc["ok"] and all(r["fp32"]["top1"] > 0.5 for r in acc["rows"]), res.output


def test_localize_and_keep_fp32_take_module_paths(trained_card):
    name, card, root = trained_card
    first, depth = ("features.1", "2") if name == "mobilenet_v2ish" else ("stage2", "1")
    run("check", root / "art", "--data", "digits", "--limit", "64", "--formats", "onnx", "--localize",
        "--depth", depth, "--keep-fp32", first, "--max-drop", "100")  # about blocks; one image here is 1.6 points
    acc = json.loads((root / "art" / "accuracy.json").read_text())
    names = [b["name"] for b in acc["localize"]["blocks"]]
    assert first in names and len(names) >= 4
    res = run("check", root / "art", "--data", "digits", "--limit", "8", "--localize", "--keep-fp32", "nope",
              code=2)
    assert "no module named nope" in res.output


@pytest.mark.arm64
def test_bench_local_and_emulated_arm64(trained_card, arm64_python):
    _, _, root = trained_card
    results = root / "r.jsonl"
    run("bench", root / "art", "--device", "local,qemu-arm64", "--results", results, *FAST)
    recs = [json.loads(line) for line in results.read_text().splitlines()]
    by_device = {d: [r for r in recs if r["device"]["name"] == d] for d in ("local", "qemu-arm64")}
    assert len(by_device["local"]) == 6 and len(by_device["qemu-arm64"]) == 4  # the emulator has no ExecuTorch
    assert all(r["status"] == "ok" for r in recs), [r["error"] for r in recs if r["status"] != "ok"]
    assert {r["device"]["arch"] for r in by_device["qemu-arm64"]} == {"aarch64"}


# ---------------------------------------------------------------- the reference EfficientNet-Lite0
@pytest.fixture(scope="module")
def lite0_pair():
    pytest.importorskip("efficientnet_lite_pytorch")
    return create_model(CARDS / "lite0_reference.toml"), create_model("efficientnet_lite0", pretrained=True)


def test_reference_lite0_card_gives_the_zoo_logits(lite0_pair):
    card_model, zoo_model = lite0_pair
    from sklearn.datasets import load_sample_images

    from edgeconv.data import Preprocess
    from PIL import Image
    pre = Preprocess.from_dict(card_model.card.preprocess, 224)
    x = np.stack([pre(Image.fromarray(img)) for img in load_sample_images().images])
    x = np.concatenate([x, np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)])
    with torch.no_grad():
        a, b = card_model(torch.from_numpy(x)).numpy(), zoo_model(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(a - b)) <= 1e-4
    assert card_model.card.labels == zoo_model.card.labels and len(card_model.card.labels) == 1000


def test_reference_lite0_twin_rule_differs_from_the_zoo_only_where_documented(lite0_pair):
    from edgeconv.card import model_cost
    card_model, zoo_model = lite0_pair
    card_twin = create_model(CARDS / "lite0_reference.toml", twin=True)
    zoo_twin = create_model("efficientnet_lite0", twin=True)
    # every block of Lite0 is an inverted residual (or its first, expansion-1, depthwise + project):
    # the generic rule makes the depthwise conv dense and keeps the pointwise ones, the zoo's the same
    assert model_cost(card_model)["macs"] == zoo_model.cost().macs
    assert model_cost(card_twin)["macs"] == zoo_twin.cost().macs


# ---------------------------------------------------------------- bad cards and sources
def _card(tmp_path, text, name="card.toml"):
    (tmp_path / "src").mkdir(exist_ok=True)
    shutil.copy(CARDS / "nets.py", tmp_path / "src" / "nets.py")
    path = tmp_path / "src" / name
    path.write_text(text)
    return path


BASE = 'input_size = 32\nnum_classes = 10\n'
BAD_CARDS = [
    ("does-not-import", 'source = "broken.py:build"\n' + BASE, "does not import: SyntaxError"),
    ("no-module", 'source = "no_such_package_xyz.models:build"\n' + BASE, "source module 'no_such_package_xyz.models' does not import"),
    ("missing-callable", 'source = "nets.py:mobilenet_v3"\n' + BASE, "has no callable 'mobilenet_v3'"),
    ("not-a-module", 'source = "nets.py:not_a_module"\n' + BASE, "returned a str, not a torch.nn.Module"),
    ("two-inputs", 'source = "nets.py:TwoInputs"\n' + BASE, "forward takes 2 inputs (x, y)"),
    ("unknown-key", 'source = "nets.py:mobilenet_v2ish"\ninput_sise = 32\n', "unknown key 'input_sise'; allowed keys"),
    ("no-input-size", 'source = "nets.py:mobilenet_v2ish"\n', "needs input_size"),
    ("bad-args", 'source = "nets.py:mobilenet_v2ish"\n' + BASE + '[source_args]\ndepth = 3\n',
     "unexpected keyword argument 'depth'"),
    ("corrupt-pt2", 'source = "model.pt2"\n' + BASE, "is not a readable torch.export program"),
]


@pytest.mark.parametrize("case, text, message", BAD_CARDS, ids=[c[0] for c in BAD_CARDS])
def test_bad_card_is_a_named_error_and_nothing_is_written(tmp_path, case, text, message):
    card = _card(tmp_path, text)
    (tmp_path / "src" / "broken.py").write_text("def build(:\n")
    (tmp_path / "src" / "model.pt2").write_bytes(b"PK\x03\x04 not really a zip")
    for args in (["info", card], ["export", card, "--out", tmp_path / "out"]):
        res = run(*args, code=2)
        assert message in " ".join(res.output.split()), res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_card_model_weights_come_from_the_seed_not_from_what_ran_before():
    """A card's source builds its module from torch's global random state: create_model seeds it,
    so training a card (in-process, as the tests and the Python API do) starts from the same weights
    whatever drew random numbers before, and the caller's state is left as it was."""
    card = CARDS / "mobilenet_v2ish.toml"
    first = create_model(card).state_dict()
    torch.rand(1000)   # what some earlier work drew
    state = torch.random.get_rng_state()
    again = create_model(card).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = create_model(card, seed=1).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_model_torch_export_refuses_names_the_line(tmp_path):
    card = _card(tmp_path, 'source = "nets.py:Branchy"\n' + BASE)
    res = run("export", card, "--out", tmp_path / "out", "--precision", "fp32", code=2)
    assert "torch.export cannot capture" in res.output and "data-dependent control flow" in res.output
    assert "nets.py:" in res.output and not (tmp_path / "out").exists()


def test_not_a_classifier_exports_verifies_benches_but_check_refuses(tmp_path):
    card = _card(tmp_path, 'source = "nets.py:FeatureMap"\ninput_size = 16\nlabels = "labels.txt"\n'
                           '[preprocess]\nresize = 16\ncrop = 16\n')
    (tmp_path / "src" / "labels.txt").write_text("a\nb\n")
    run("export", card, "--out", tmp_path / "art", "--calib", "random", "--formats", "onnx,tflite")
    run("verify", tmp_path / "art", "--min-agreement", "0")
    run("bench", tmp_path / "art", "--results", tmp_path / "r.jsonl", *FAST)
    res = run("check", tmp_path / "art", "--data", "digits", code=2)
    assert "not N x 2" in res.output and "export, verify and bench still work" in res.output


def test_source_given_directly_needs_input_size_and_check_names_the_missing_fields(tmp_path):
    src = tmp_path / "nets.py"
    shutil.copy(CARDS / "nets.py", src)
    res = run("info", f"{src}:shufflenetish", code=2)
    assert "--input-size" in res.output
    run("export", f"{src}:shufflenetish", "--input-size", "32", "--out", tmp_path / "art", "--calib", "digits",
        "--formats", "onnx")
    res = run("check", tmp_path / "art", "--data", "digits", code=2)
    assert "labels" in res.output and "[preprocess]" in res.output and "model card" in res.output


def test_pt2_program_card_with_its_twin(tmp_path):
    sys.path.insert(0, str(CARDS))
    try:
        import nets
    finally:
        sys.path.remove(str(CARDS))
    model = nets.shufflenetish().eval()
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 32, 32),)), tmp_path / "shuffle.pt2")
    card = tmp_path / "card.toml"
    card.write_text('source = "shuffle.pt2"\ninput_size = 32\nnum_classes = 10\n')
    info = json.loads(run("info", card, "--json").stdout)
    from edgeconv.cost import count_macs
    assert info["cost"]["macs"] == count_macs(model, (3, 32, 32))
    assert info["twin_cost"]["macs"] > 3 * info["cost"]["macs"]
    run("export", card, "--out", tmp_path / "art", "--formats", "onnx,tflite")
    art = Artifact.load(tmp_path / "art")
    assert (art.path / "reference.pt2").exists() and art.manifest.source["kind"] == "pt2"
    run("verify", tmp_path / "art", "--min-agreement", "0")
    run("export", card, "--twin", "--out", tmp_path / "twin", "--formats", "onnx", "--precision", "fp32")
    run("verify", tmp_path / "twin")


@pytest.fixture(scope="module")
def lite0_photos(tmp_path_factory):
    """ImageNet-labelled photos in class folders: crops of scikit-learn's two sample photos
    (a palace and a daisy), calibration and evaluation crops apart."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    root = tmp_path_factory.mktemp("photos")
    for label, img in zip(("palace", "daisy"), load_sample_images().images):
        h, w = img.shape[:2]
        for i in range(8):
            top, left = (i * 37) % (h // 3), (i * 53) % (w // 3)
            crop = Image.fromarray(img[top:top + 2 * h // 3, left:left + 2 * w // 3])
            folder = root / ("calib" if i < 5 else "eval") / label
            folder.mkdir(parents=True, exist_ok=True)
            crop.save(folder / f"{label}_{i}.jpg")
    return root


@pytest.mark.arm64
def test_reference_lite0_card_through_every_verb(lite0_pair, lite0_photos, tmp_path, arm64_python):
    """The PyPI reference EfficientNet-Lite0 as a card, at 96 x 96 to keep it short: info against the
    twin formula, every format and precision with every conv int8, verify, check on labelled photos,
    bench on this host and the emulated arm64 device."""
    card, art = CARDS / "lite0_reference.toml", tmp_path / "art"
    info = json.loads(run("info", card, "--input-size", "96", "--json").stdout)
    model = create_model(card, input_size=96)
    rows = {r["name"]: r for r in info["cost"]["blocks"]}
    twin_rows = {r["name"]: r for r in info["twin_cost"]["blocks"]}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert sum(m.groups > 1 for m in convs.values()) == 16
    for path, conv in convs.items():
        assert twin_rows[path]["macs"] == dense_macs(rows[path], conv), path
    run("export", card, "--input-size", "96", "--calib", lite0_photos / "calib", "--out", art)
    a = Artifact.load(art)
    assert a.manifest.complete and not a.errors and len(a.files) == 6
    for e in a.files.values():
        if e.precision == "int8":
            assert e.int8_report["convs"] == e.int8_report["convs_int8"] == len(convs), (e.format, e.int8_report)
            assert e.int8_report["ops_int8"] == e.int8_report["ops"], (e.format, e.int8_report["float_ops"])
    # ten crops of two photos at 96 px: 1000-way top-1 is flat there, so agreement is loose; SQNR is not
    verify = json.loads(run("verify", art, "--min-agreement", "0.5", "--json").stdout)
    assert "calibration images" in verify["inputs"] and all(r["ok"] for r in verify["rows"]), verify
    run("check", art, "--data", lite0_photos / "eval", "--max-drop", "100")  # 6 photos: about the path, not the figure
    acc = json.loads((art / "accuracy.json").read_text())
    assert {r["runtime"] for r in acc["rows"]} == {"onnxruntime", "litert", "executorch"}
    assert acc["ok"] and all(r["delta_top1"]["n"] == 6 for r in acc["rows"]), acc["rows"]
    results = tmp_path / "r.jsonl"
    run("bench", art, "--device", "local,qemu-arm64", "--results", results, *FAST)
    recs = [json.loads(line) for line in results.read_text().splitlines()]
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    assert {(r["device"]["name"], r["runtime"]) for r in recs} >= {("local", "executorch"), ("qemu-arm64", "litert"),
                                                                   ("qemu-arm64", "onnxruntime")}
