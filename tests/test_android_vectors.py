"""The Android demo app's contract: shared preprocessing vectors, manifest checks, install.

The vectors in android_demo/app/src/test/resources/vectors pin the app's preprocessing to the
host's (edgeconv.data.Preprocess + the device runner's quantisation). Regenerating them here
and comparing with the committed ones catches a change of the Python side; the Kotlin core
is run on the same files by test_kotlin_core_on_vectors (Debian package `kotlin`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeconv import android

APP = android.APP_DIR
VECTORS = android.VECTORS_DIR


# --- vectors -------------------------------------------------------------------------------

def test_vectors_match_committed(tmp_path):
    written = android.make_vectors(tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(p.name for p in VECTORS.iterdir()), \
        "the committed vector files differ from the generated set: run `python -m edgeconv.android vectors`"
    for name in names:
        new, old = tmp_path / name, VECTORS / name
        if name.endswith(".png"):
            a, b = np.asarray(Image.open(new)), np.asarray(Image.open(old))
            assert a.shape == b.shape and (a == b).all(), (
                f"source image {name} changed (for china_*: scikit-learn's photo or the JPEG decoder "
                "changed); regenerate with `python -m edgeconv.android vectors` and rerun the Kotlin check")
            continue
        got, want = json.loads(new.read_text()), json.loads(old.read_text())
        if got == want:
            continue
        for gc, wc in zip(got.get("cases", []), want.get("cases", [])) if isinstance(got, dict) else []:
            for key in ("resized_size", "crop_rgb", "expected"):
                assert gc[key] == wc[key], (
                    f"{name} case {gc['name']}: the host preprocessing now gives a different {key} "
                    "(Pillow version or edgeconv/data.py / bench_device/agent.py changed). The app "
                    "must follow: update android_demo's core if needed, then regenerate with "
                    "`python -m edgeconv.android vectors`")
        assert got == want, f"{name} differs from the regenerated one: run `python -m edgeconv.android vectors`"


def test_vectors_cover_the_contract():
    index = json.loads((VECTORS / "index.json").read_text())
    cases = [c for f in index["files"] for c in json.loads((VECTORS / f).read_text())["cases"]]
    inputs = [c["manifest"]["files"][c["manifest"]["android"]["model_file"]]["input"] for c in cases]
    assert {i["layout"] for i in inputs} == {"NHWC", "NCHW"}
    assert {i["dtype"] for i in inputs} == {"float32", "int8", "uint8"}
    assert {c["manifest"]["preprocess"]["interpolation"] for c in cases} == {"bilinear", "bicubic", "nearest"}
    docs = {f: json.loads((VECTORS / f).read_text()) for f in index["files"]}
    down = up = 0
    for doc in docs.values():
        for c in doc["cases"]:
            w, h = c["resized_size"]
            down += w < doc["width"]
            up += w > doc["width"]
    assert down >= 5 and up >= 2
    assert any(json.loads((VECTORS / f).read_text())["height"] > 2 * json.loads((VECTORS / f).read_text())["width"]
               for f in index["files"]), "no tall image: Pillow's vertical-first order is not covered"
    for c in cases:
        assert android.check_manifest(c["manifest"]) == []


# --- check_manifest ------------------------------------------------------------------------

def good_manifest() -> dict:
    return {
        "schema_version": 1, "model": "tiny", "twin": False, "input_shape_nchw": [1, 3, 32, 32],
        "labels": [str(i) for i in range(10)],
        "preprocess": {"resize": 32, "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                       "interpolation": "bilinear", "scale": "pixel / 255", "layout": "NCHW",
                       "channel_order": "RGB"},
        "files": {
            "model_int8.tflite": {
                "format": "tflite", "precision": "int8",
                "input": {"name": "x", "shape": [1, 32, 32, 3], "shape_nchw": [1, 3, 32, 32],
                          "layout": "NHWC", "dtype": "int8", "quant": {"scale": 0.0157, "zero_point": -1}},
                "output": {"name": "y", "shape": [1, 10], "dtype": "int8",
                           "quant": {"scale": 0.1, "zero_point": 3}}},
            "model_fp32.tflite": {
                "format": "tflite", "precision": "fp32",
                "input": {"name": "x", "shape": [1, 32, 32, 3], "shape_nchw": [1, 3, 32, 32],
                          "layout": "NHWC", "dtype": "float32", "quant": None},
                "output": {"name": "y", "shape": [1, 10], "dtype": "float32", "quant": None}},
            "model_fp32.onnx": {"format": "onnx", "precision": "fp32",
                                "input": {"name": "x", "shape": [1, 3, 32, 32], "layout": "NCHW",
                                          "dtype": "float32", "quant": None},
                                "output": {"name": "y", "shape": [1, 10], "dtype": "float32", "quant": None}},
        },
    }


def test_check_manifest_accepts_good():
    m = good_manifest()
    assert android.check_manifest(m) == []
    m["android"] = {"model_file": "model_fp32.tflite"}
    assert android.check_manifest(m) == []
    assert android.default_model_file(good_manifest()) == "model_int8.tflite"


I8 = 'files["model_int8.tflite"]'


def _edit(path, value=None, delete=False):
    def f(m):
        *parents, last = path
        d = m
        for k in parents:
            d = d[k]
        if delete:
            del d[last]
        else:
            d[last] = value
    return f


BAD = [
    ("no tflite", lambda m: m.update(files={"model_fp32.onnx": m["files"]["model_fp32.onnx"]}),
     "files has no TFLite entry"),
    ("layout", _edit(["files", "model_int8.tflite", "input", "layout"], "CHW"),
     f"{I8}.input.layout is \"CHW\": must be NHWC or NCHW"),
    ("dtype", _edit(["files", "model_int8.tflite", "input", "dtype"], "float16"),
     f"{I8}.input.dtype is \"float16\""),
    ("int8 without quant", _edit(["files", "model_int8.tflite", "input", "quant"], None),
     f"{I8}.input.quant is null: int8 tensors need"),
    ("zero point range", _edit(["files", "model_int8.tflite", "input", "quant"], {"scale": 0.1, "zero_point": 200}),
     f"{I8}.input.quant.zero_point is 200: must be an integer in [-128, 127]"),
    ("output quant", _edit(["files", "model_int8.tflite", "output", "quant"], None),
     f"{I8}.output.quant is null"),
    ("labels count", _edit(["labels"], ["a", "b"]),
     "labels has 2 entries but " + I8 + ".output.shape [1, 10] gives 10 classes"),
    ("missing preprocess keys", _edit(["preprocess", "mean"], delete=True), "preprocess lacks mean"),
    ("interpolation", _edit(["preprocess", "interpolation"], "lanczos"), "preprocess.interpolation is \"lanczos\""),
    ("std zero", _edit(["preprocess", "std"], [0.5, 0, 0.5]), "preprocess.std is [0.5, 0, 0.5]: no value may be 0"),
    ("channel order", _edit(["preprocess", "channel_order"], "BGR"), "preprocess.channel_order is \"BGR\""),
    ("crop vs shape", _edit(["preprocess", "crop"], 28), f"{I8}.input.shape is [1, 32, 32, 3] (NHWC): its H x W 32 x 32 must equal"),
    ("channels", _edit(["files", "model_int8.tflite", "input", "shape"], [1, 32, 32, 1]), "1 channel(s); the app feeds RGB"),
    ("model_file missing", _edit(["android"], {"model_file": "model_int4.tflite"}),
     "android.model_file names \"model_int4.tflite\", which is not in files"),
    ("model_file not tflite", _edit(["android"], {"model_file": "model_fp32.onnx"}),
     "android.model_file names \"model_fp32.onnx\", which is not a TFLite file"),
    ("schema", _edit(["schema_version"], 3), "schema_version is 3: the app reads schema_version 1 or 2"),
    ("no preprocess", _edit(["preprocess"], delete=True), "preprocess is null: must be an object"),
]


@pytest.mark.parametrize("name,edit,message", BAD, ids=[b[0] for b in BAD])
def test_check_manifest_names_the_problem(name, edit, message):
    m = good_manifest()
    edit(m)
    problems = android.check_manifest(m)
    assert any(message in p for p in problems), f"{name}: {problems}"


def test_check_manifest_checks_the_file_the_app_runs():
    m = good_manifest()
    m["files"]["model_fp32.tflite"]["input"]["layout"] = "CHW"
    assert android.check_manifest(m) == []          # the app runs the int8 file
    m["android"] = {"model_file": "model_fp32.tflite"}
    assert any("model_fp32.tflite" in p and "layout" in p for p in android.check_manifest(m))


# --- install -------------------------------------------------------------------------------

def make_artifact(root: Path, manifest: dict | None = None) -> Path:
    art = root / "artifact"
    art.mkdir()
    m = manifest if manifest is not None else good_manifest()
    for name, entry in m["files"].items():
        data = f"dummy {name}".encode()
        (art / name).write_bytes(data)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["bytes"] = len(data)
    (art / "manifest.json").write_text(json.dumps(m))
    return art


def make_app(root: Path) -> Path:
    app = root / "android_demo"
    (app / "app").mkdir(parents=True)
    return app


def test_install_writes_assets(tmp_path):
    art, app = make_artifact(tmp_path), make_app(tmp_path)
    dest = android.install(art, app)
    assert dest == app / "app/src/main/assets/edgeconv"
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "model_int8.tflite", "sample.png"]
    m = json.loads((dest / "manifest.json").read_text())
    assert m["android"]["model_file"] == "model_int8.tflite"
    assert list(m["files"]) == ["model_int8.tflite"]
    assert android.check_manifest(m) == []
    assert (dest / "model_int8.tflite").read_bytes() == b"dummy model_int8.tflite"
    with Image.open(dest / "sample.png") as im:   # a held-out digit for a digits model
        assert im.mode == "RGB" and im.size == (8, 8)

    android.install(art, app, "model_fp32.tflite")      # switching files leaves no stale model
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "model_fp32.tflite", "sample.png"]
    assert json.loads((dest / "manifest.json").read_text())["android"]["model_file"] == "model_fp32.tflite"


def test_install_sample_given_or_photo(tmp_path):
    m = good_manifest()
    m["labels"] = [f"class {i}" for i in range(10)]
    art, app = make_artifact(tmp_path, m), make_app(tmp_path)
    dest = android.install(art, app)
    with Image.open(dest / "sample.png") as im:
        assert im.size == (384, 256)
    android.synthetic_image(61, 47).save(tmp_path / "mine.png")
    android.install(art, app, sample=tmp_path / "mine.png")
    with Image.open(dest / "sample.png") as im:
        assert im.size == (61, 47)


@pytest.mark.parametrize("edit,needles", [
    (BAD[1][1], ["model_int8.tflite", "layout", '"CHW"', "NHWC"]),   # refused when the manifest is read
    (BAD[3][1], [BAD[3][2]]),
    (BAD[6][1], [BAD[6][2]]),
], ids=["layout", "no quant", "labels"])
def test_install_refuses_bad_manifest_before_writing(tmp_path, edit, needles):
    m = good_manifest()
    edit(m)
    art, app = make_artifact(tmp_path, m), make_app(tmp_path)
    with pytest.raises(ValueError) as e:
        android.install(art, app)
    assert all(n in str(e.value) for n in needles), str(e.value)
    assert not (app / "app/src/main").exists()


def test_install_refuses_missing_or_stale_file(tmp_path):
    art, app = make_artifact(tmp_path), make_app(tmp_path)
    with pytest.raises(ValueError, match="not in files"):
        android.install(art, app, "model_int4.tflite")
    (art / "model_int8.tflite").write_bytes(b"changed")
    with pytest.raises(ValueError, match="sha256 does not match"):
        android.install(art, app)
    (art / "model_int8.tflite").unlink()
    with pytest.raises(ValueError, match="does not exist"):
        android.install(art, app)
    m = good_manifest()
    m["files"] = {"model_fp32.onnx": m["files"]["model_fp32.onnx"]}
    (tmp_path / "x").mkdir()
    art2 = make_artifact(tmp_path / "x", m)
    with pytest.raises(ValueError, match="no TFLite entry"):
        android.install(art2, app)
    assert not (app / "app/src/main").exists()
    with pytest.raises(ValueError, match="not the Android demo app folder"):
        android.install(art, tmp_path / "nowhere")


def test_cli_check(tmp_path, capsys):
    m = good_manifest()
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert android.main(["check", str(tmp_path)]) == 0
    m["files"]["model_int8.tflite"]["input"]["layout"] = "HWC"
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert android.main(["check", str(tmp_path / "manifest.json")]) == 1
    assert "must be NHWC or NCHW" in capsys.readouterr().out


# --- the Kotlin core on the same vectors ---------------------------------------------------

KOTLIN_SOURCES = (sorted((APP / "app/src/main/java/dev/edgeconv/demo/core").glob("*.kt"))
                  + sorted((APP / "app/src/test/java/dev/edgeconv/demo").glob("*.kt"))
                  + sorted((APP / "tools/junit-shim").glob("*.kt")))


def test_kotlin_core_on_vectors(tmp_path):
    """Compile the app's pure-Kotlin core, its JUnit test (against tools/junit-shim) and the
    VectorCheck runner with plain kotlinc (Debian: apt-get install kotlin), then run both on the
    committed vectors: every uint8 pixel and every model-input value must equal the host's."""
    kotlinc, java = shutil.which("kotlinc"), shutil.which("java")
    if not kotlinc or not java:
        pytest.skip("kotlinc not installed (Debian package `kotlin`: apt-get install kotlin)")
    jar = tmp_path / "vectorcheck.jar"
    t0 = time.monotonic()
    build = subprocess.run([kotlinc, *map(str, KOTLIN_SOURCES), "-include-runtime", "-d", str(jar)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0 and jar.exists(), f"kotlinc failed:\n{build.stdout}\n{build.stderr}"
    print(f"kotlinc {time.monotonic() - t0:.1f} s")
    run = subprocess.run([java, "-cp", str(jar), "dev.edgeconv.demo.VectorCheckKt", str(VECTORS)],
                         capture_output=True, text=True, timeout=300)
    print(run.stdout)
    assert run.returncode == 0, f"the Kotlin core disagrees with the host:\n{run.stdout}\n{run.stderr}"
    last = run.stdout.strip().splitlines()[-1]
    assert last.endswith(" 0 failed") and not last.startswith("0 passed"), last
    assert "max difference 0)" in run.stdout
    junit = subprocess.run([java, "-cp", f"{jar}:{APP / 'app/src/test/resources'}", "org.junit.RunTestsKt",
                            "dev.edgeconv.demo.PreprocessTest"], capture_output=True, text=True, timeout=300)
    print(junit.stdout)
    assert junit.returncode == 0, f"PreprocessTest failed:\n{junit.stdout}\n{junit.stderr}"
