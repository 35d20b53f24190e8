"""The Android demo app (``android_demo/``): its manifest contract, its assets and the test
vectors that pin its preprocessing to the host's.

* ``check_manifest(manifest)``: the problems that would stop the app from consuming a
  manifest, each naming the key and what is allowed ([] when the app can run it).
* ``install(artifact_dir, app_dir)``: copies a .tflite file, its manifest (with
  ``android.model_file`` set) and a ``sample.png`` into the app's assets; refuses a manifest
  that ``check_manifest`` rejects before writing anything.
* ``make_vectors(out_dir)``: the shared preprocessing vectors. Three source images (two
  synthetic, one photo from scikit-learn) run through the host pipeline (``data.Preprocess``:
  Pillow resize of the shorter side, center crop, /255, mean/std; then the device runner's
  layout change and int8/uint8 quantisation) under several manifests. The app's Kotlin core
  must give the same uint8 pixels and the same tensors (``PreprocessTest.kt``,
  ``VectorCheck.kt``); ``tests/test_android_vectors.py`` regenerates them and compares with
  the committed ones, so a change of the Python preprocessing shows up there.

    python -m edgeconv.android vectors            # regenerate the committed vectors
    python -m edgeconv.android check artifacts/tiny/manifest.json
    python -m edgeconv.android install artifacts/tiny android_demo [--file model_fp32.tflite]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import types
from pathlib import Path

from .artifact import READABLE_SCHEMAS, SCHEMA_VERSION, Artifact, ArtifactError

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "android_demo"
VECTORS_DIR = APP_DIR / "app" / "src" / "test" / "resources" / "vectors"
ASSETS = Path("app") / "src" / "main" / "assets" / "edgeconv"  # under the app folder

VECTORS_VERSION = 1
LAYOUTS = ("NHWC", "NCHW")
DTYPES = {"float32": None, "int8": (-128, 127), "uint8": (0, 255)}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
PREPROCESS_KEYS = ("resize", "crop", "mean", "std")
CHANNELS = 3


# ---------------------------------------------------------------------------------------------
# The manifest contract

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def tflite_files(manifest: dict) -> list[str]:
    files = manifest.get("files")
    if not isinstance(files, dict):
        return []
    return [name for name, e in files.items()
            if isinstance(e, dict) and (e.get("format") == "tflite" or name.endswith(".tflite"))]


def default_model_file(manifest: dict) -> str | None:
    """The file the app runs when ``android.model_file`` is not set: the int8 .tflite if there
    is one, else the fp32 one, else the first .tflite."""
    names = tflite_files(manifest)
    files = manifest.get("files") or {}
    for precision in ("int8", "fp32"):
        for name in names:
            if files[name].get("precision") == precision:
                return name
    return names[0] if names else None


def _check_quant(q, where: str, dtype: str) -> list[str]:
    lo, hi = DTYPES[dtype]
    if not isinstance(q, dict):
        return [f"{where}.quant is {json.dumps(q)}: {dtype} tensors need "
                f'{{"scale": <number > 0>, "zero_point": <integer in [{lo}, {hi}]>}}']
    out = []
    scale, zp = q.get("scale"), q.get("zero_point")
    if not (_is_num(scale) and scale > 0):
        out.append(f"{where}.quant.scale is {json.dumps(scale)}: must be a finite number > 0")
    if not (_is_int(zp) and lo <= zp <= hi):
        out.append(f"{where}.quant.zero_point is {json.dumps(zp)}: must be an integer in [{lo}, {hi}] "
                   f"for {dtype}")
    return out


def _check_tensor(t, where: str, *, is_input: bool) -> list[str]:
    if not isinstance(t, dict):
        return [f"{where} is missing: the app needs the {'input' if is_input else 'output'} "
                "tensor's shape, dtype and quant"]
    out = []
    shape = t.get("shape")
    if not (isinstance(shape, list) and shape and all(_is_int(d) and d > 0 for d in shape)):
        out.append(f"{where}.shape is {json.dumps(shape)}: must be a list of positive integers")
        shape = None
    dtype = t.get("dtype")
    if dtype not in DTYPES:
        out.append(f"{where}.dtype is {json.dumps(dtype)}: the app feeds and reads "
                   f"{', '.join(DTYPES)}")
    elif dtype == "float32":
        if t.get("quant") is not None:
            out.append(f"{where}.quant is set for a float32 tensor: must be null")
    else:
        out += _check_quant(t.get("quant"), where, dtype)
    if is_input:
        layout = t.get("layout")
        if layout not in LAYOUTS:
            out.append(f"{where}.layout is {json.dumps(layout)}: must be NHWC or NCHW")
        if shape is not None:
            if len(shape) != 4 or shape[0] != 1:
                out.append(f"{where}.shape is {shape}: the app feeds one image, [1, H, W, 3] (NHWC) "
                           "or [1, 3, H, W] (NCHW)")
            elif layout in LAYOUTS:
                c = shape[3] if layout == "NHWC" else shape[1]
                if c != CHANNELS:
                    out.append(f"{where}.shape is {shape} with layout {layout}: {c} channel(s); the "
                               "app feeds RGB, 3 channels")
    return out


def _model_entry(manifest: dict) -> tuple[str | None, list[str]]:
    android = manifest.get("android")
    if android is not None and not isinstance(android, dict):
        return None, [f"android is {json.dumps(android)}: must be an object such as "
                      '{"model_file": "model_int8.tflite"}']
    name = (android or {}).get("model_file")
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    tfl = tflite_files(manifest)
    if not tfl:
        have = ", ".join(files) or "none"
        return None, [f"files has no TFLite entry (files: {have}): the app runs .tflite models only; "
                      "export with --formats tflite"]
    if name is None:
        return default_model_file(manifest), []
    if name not in files:
        return None, [f"android.model_file names {json.dumps(name)}, which is not in files "
                      f"(TFLite files: {', '.join(tfl)})"]
    if name not in tfl:
        return None, [f"android.model_file names {json.dumps(name)}, which is not a TFLite file "
                      f"(TFLite files: {', '.join(tfl)})"]
    return name, []


def check_manifest(manifest: dict) -> list[str]:
    """The problems that would stop the Android app from consuming ``manifest`` ([] if none).

    The app runs the file named by ``android.model_file`` (when absent: the int8 .tflite, else
    the fp32 one); only that file's entry is checked, with the labels and the preprocessing."""
    if not isinstance(manifest, dict):
        return [f"the manifest is a {type(manifest).__name__}: must be a JSON object"]
    problems = []
    sv = manifest.get("schema_version")
    if isinstance(sv, bool) or sv not in READABLE_SCHEMAS:
        problems.append(f"schema_version is {json.dumps(sv)}: the app reads schema_version "
                        f"{' or '.join(map(str, READABLE_SCHEMAS))}")
    labels = manifest.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(s, str) for s in labels)):
        problems.append(f"labels is {json.dumps(labels)[:60]}: must be a non-empty list of strings, "
                        "one per output class")
        labels = None

    pre = manifest.get("preprocess")
    crop = None
    if not isinstance(pre, dict):
        problems.append(f"preprocess is {json.dumps(pre)}: must be an object with "
                        f"{', '.join(PREPROCESS_KEYS)} (and interpolation)")
    else:
        missing = [k for k in PREPROCESS_KEYS if k not in pre]
        if missing:
            problems.append(f"preprocess lacks {', '.join(missing)}: the app needs "
                            f"{', '.join(PREPROCESS_KEYS)}")
        for k in ("resize", "crop"):
            if k in pre and not (_is_int(pre[k]) and pre[k] > 0):
                problems.append(f"preprocess.{k} is {json.dumps(pre[k])}: must be a positive integer")
        if _is_int(pre.get("crop")) and pre["crop"] > 0:
            crop = pre["crop"]
        for k in ("mean", "std"):
            v = pre.get(k)
            if k in pre and not (isinstance(v, list) and len(v) == CHANNELS and all(_is_num(x) for x in v)):
                problems.append(f"preprocess.{k} is {json.dumps(v)}: must be a list of {CHANNELS} numbers "
                                "(R, G, B)")
            elif k == "std" and k in pre and any(x == 0 for x in v):
                problems.append(f"preprocess.std is {v}: no value may be 0")
        interp = pre.get("interpolation", "bilinear")
        if interp not in INTERPOLATIONS:
            problems.append(f"preprocess.interpolation is {json.dumps(interp)}: must be one of "
                            f"{', '.join(INTERPOLATIONS)}")
        if pre.get("channel_order", "RGB") != "RGB":
            problems.append(f"preprocess.channel_order is {json.dumps(pre['channel_order'])}: "
                            "the app feeds RGB")
        if pre.get("scale", "pixel / 255") != "pixel / 255":
            problems.append(f"preprocess.scale is {json.dumps(pre['scale'])}: the app scales "
                            "\"pixel / 255\"")

    if not isinstance(manifest.get("files"), dict):
        problems.append(f"files is {json.dumps(manifest.get('files'))}: must be an object of "
                        "file name -> entry, with a .tflite file")
        return problems
    name, p = _model_entry(manifest)
    problems += p
    if name is None:
        return problems
    entry = manifest["files"][name]
    where = f"files[{json.dumps(name)}]"
    inp, outp = entry.get("input"), entry.get("output")
    problems += _check_tensor(inp, f"{where}.input", is_input=True)
    problems += _check_tensor(outp, f"{where}.output", is_input=False)
    if (crop is not None and isinstance(inp, dict) and inp.get("layout") in LAYOUTS
            and isinstance(inp.get("shape"), list) and len(inp["shape"]) == 4):
        s = inp["shape"]
        hw = s[1:3] if inp["layout"] == "NHWC" else s[2:4]
        if hw != [crop, crop]:
            problems.append(f"{where}.input.shape is {s} ({inp['layout']}): its H x W {hw[0]} x {hw[1]} "
                            f"must equal preprocess.crop x crop = {crop} x {crop}")
    if labels is not None and isinstance(outp, dict) and isinstance(outp.get("shape"), list) \
            and outp["shape"] and all(_is_int(d) and d > 0 for d in outp["shape"]):
        classes = math.prod(outp["shape"][1:]) if len(outp["shape"]) > 1 else outp["shape"][0]
        if classes != len(labels):
            problems.append(f"labels has {len(labels)} entries but {where}.output.shape "
                            f"{outp['shape']} gives {classes} classes: one label per class")
    return problems


# ---------------------------------------------------------------------------------------------
# Install into the app

def default_sample(manifest: dict):
    """A PIL image to bundle as ``sample.png``: a held-out scikit-learn digit (8 x 8, exactly
    the evaluation pipeline's input) for a 10-class digits model, else the scikit-learn photo."""
    from PIL import Image
    labels = manifest.get("labels") or []
    if labels == [str(i) for i in range(10)]:
        from sklearn.datasets import load_digits

        from .artifact import split_indices
        from .data import DIGITS_TRAIN
        d = load_digits()
        i = split_indices(len(d.images), "eval", DIGITS_TRAIN)[0]
        return Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8), "L").convert("RGB")
    img = china_photo()
    return img.resize((384, 256), Image.BICUBIC)


def check_app(app_dir) -> None:
    """Refuse a folder that is not the Android demo app (before an export it would install into)."""
    if not (Path(app_dir) / "app").is_dir():
        raise ValueError(f"{app_dir} is not the Android demo app folder (no app/ in it); "
                         "pass the android_demo folder")


def install(artifact_dir, app_dir, file_name: str | None = None, sample=None) -> Path:
    """Put the model of ``artifact_dir`` into the app at ``app_dir`` (``android_demo``).

    Copies ``file_name`` (default: the int8 .tflite if present, else the fp32 one), writes the
    manifest with ``android.model_file`` set and only that file under ``files``, and a
    ``sample.png`` (``sample``: a path or PIL image; default: see ``default_sample``) into
    ``app_dir/app/src/main/assets/edgeconv/``. Raises ValueError listing the problems, before
    writing anything, if the app could not consume the result. Returns the assets folder."""
    artifact_dir, app_dir = Path(artifact_dir), Path(app_dir)
    art = Artifact.load(artifact_dir)
    manifest = art.manifest.to_dict()
    check_app(app_dir)
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    if file_name is None:
        file_name = (manifest.get("android") or {}).get("model_file") if isinstance(
            manifest.get("android"), dict) else None
        file_name = file_name or default_model_file(manifest)
    m = copy.deepcopy(manifest)
    problems = []
    if file_name is not None:
        if not isinstance(m.get("android"), dict):
            m["android"] = {}
        m["android"]["model_file"] = file_name
    problems += check_manifest(m)
    src = artifact_dir / file_name if file_name else None
    if src is not None and file_name in files and not problems:
        try:
            art.checked(file_name)
        except ArtifactError as e:
            problems.append(str(e))
    if problems:
        raise ValueError(f"cannot install {artifact_dir} into the Android app:\n  - "
                         + "\n  - ".join(problems))
    from PIL import Image
    if sample is None:
        sample_img = default_sample(m)
    elif isinstance(sample, (str, Path)):
        with Image.open(sample) as im:
            sample_img = im.convert("RGB")
    else:
        sample_img = sample.convert("RGB")
    m["files"] = {file_name: m["files"][file_name]}
    m["android"]["sample"] = "sample.png"

    dest = app_dir / ASSETS
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.tflite"):
        if old.name != file_name:
            old.unlink()
    shutil.copyfile(src, dest / file_name)
    sample_img.save(dest / "sample.png")
    (dest / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    return dest


# ---------------------------------------------------------------------------------------------
# Test vectors

def synthetic_image(w: int, h: int, variant: int = 0):
    """A deterministic photo-like RGB test image: smooth gradients, a disc, a bar, fine
    stripes and a checkerboard (integer arithmetic only, the same on every machine)."""
    from PIL import Image
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 255) // max(w - 1, 1)
    g = (y * 255) // max(h - 1, 1)
    b = ((x * 3 + y * 5 + 40 * variant) % 256)
    img = np.stack([r, g, b], -1)
    cx, cy, rad = (w * (2 + variant)) // 5, (h * 2) // 5, min(w, h) // 4
    disc = (x - cx) ** 2 + (y - cy) ** 2 <= rad * rad
    img[disc] = [230, 40 + 60 * variant, 60]
    bar = (x >= (w * 3) // 5) & (x < (w * 3) // 5 + max(w // 8, 2)) & (y >= h // 6) & (y < (h * 5) // 6)
    img[bar] = [20, 20, 200 - 50 * variant]
    stripes = (y >= (h * 3) // 4) & (x < w // 2)
    img[stripes] = np.where(((x[stripes] + y[stripes]) % 3)[:, None] == 0, 250, 5)
    checker = (x >= (w * 4) // 5) & (y < h // 3)
    img[checker] = np.where((((x[checker] // 2) + (y[checker] // 2)) % 2)[:, None] == 0,
                            [255, 255, 0], [0, 60, 120])
    return Image.fromarray(img.astype(np.uint8), "RGB")


def china_photo():
    """scikit-learn's bundled photo (``china.jpg``, 640 x 427), as a PIL RGB image."""
    from PIL import Image
    from sklearn.datasets import load_sample_image
    return Image.fromarray(load_sample_image("china.jpg"), "RGB")


IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
HALF = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
INT8_Q = {"scale": 0.0157, "zero_point": -1}   # [-1, 1] inputs, as for tiny/int8
INT8_Q2 = {"scale": 0.0186584, "zero_point": 14}  # ImageNet mean/std inputs
UINT8_Q = {"scale": 0.0078125, "zero_point": 128}


def _case(name, resize, crop, norm, interp, layout, dtype, quant=None):
    return {"name": name, "preprocess": {"resize": resize, "crop": crop, "mean": norm[0],
                                         "std": norm[1], "interpolation": interp},
            "layout": layout, "dtype": dtype, "quant": quant}


def vector_specs():
    """(file stem, PIL image, cases): each case a manifest variant; sizes chosen so that
    most resizes downscale (Pillow antialiases), some upscale, one hits a .5 rounding of the
    resized size and a tall image takes Pillow's vertical-first order."""
    from PIL import Image
    a = synthetic_image(61, 47, 0)
    b = synthetic_image(45, 30, 1)
    c = china_photo().resize((80, 53), Image.BICUBIC)
    d = synthetic_image(23, 61, 2)
    return [
        ("synthetic_61x47", a, [
            _case("f32_nchw_imagenet_bilinear", 40, 32, IMAGENET, "bilinear", "NCHW", "float32"),
            _case("f32_nhwc_half_bicubic", 24, 20, HALF, "bicubic", "NHWC", "float32"),
            _case("int8_nhwc_bilinear", 32, 28, HALF, "bilinear", "NHWC", "int8", INT8_Q),
            _case("uint8_nhwc_bicubic", 30, 26, HALF, "bicubic", "NHWC", "uint8", UINT8_Q),
            _case("f32_nchw_nearest", 30, 24, IMAGENET, "nearest", "NCHW", "float32"),
        ]),
        ("synthetic_45x30", b, [
            _case("f32_nhwc_round_half_bilinear", 15, 14, HALF, "bilinear", "NHWC", "float32"),
            _case("int8_nchw_imagenet_bicubic", 20, 18, IMAGENET, "bicubic", "NCHW", "int8", INT8_Q2),
            _case("f32_nchw_upscale_bicubic", 34, 30, IMAGENET, "bicubic", "NCHW", "float32"),
            _case("uint8_nchw_upscale_bilinear", 36, 32, HALF, "bilinear", "NCHW", "uint8", UINT8_Q),
            _case("int8_nhwc_upscale_nearest", 34, 30, HALF, "nearest", "NHWC", "int8", INT8_Q),
        ]),
        ("china_80x53", c, [
            _case("f32_nchw_imagenet_bicubic", 36, 32, IMAGENET, "bicubic", "NCHW", "float32"),
            _case("int8_nhwc_bilinear", 32, 32, HALF, "bilinear", "NHWC", "int8", INT8_Q),
            _case("uint8_nhwc_bicubic_crop_gt_resize", 20, 24, HALF, "bicubic", "NHWC", "uint8", UINT8_Q),
            _case("f32_nhwc_imagenet_nearest", 27, 24, IMAGENET, "nearest", "NHWC", "float32"),
        ]),
        # taller than 2:1: Pillow >= 13 runs the vertical pass first when downscaling
        ("synthetic_23x61", d, [
            _case("f32_nchw_vertical_first_bilinear", 16, 14, IMAGENET, "bilinear", "NCHW", "float32"),
            _case("int8_nhwc_vertical_first_bicubic", 20, 16, HALF, "bicubic", "NHWC", "int8", INT8_Q),
        ]),
    ]


def case_manifest(case: dict) -> dict:
    """A full manifest (the app's contract) for one vector case; output: 2 classes."""
    crop = case["preprocess"]["crop"]
    nchw = [1, 3, crop, crop]
    shape = nchw if case["layout"] == "NCHW" else [1, crop, crop, 3]
    fname = f"model_{'fp32' if case['dtype'] == 'float32' else 'int8'}.tflite"
    return {
        "schema_version": SCHEMA_VERSION, "model": "vector", "twin": False, "labels": ["a", "b"],
        "preprocess": {**case["preprocess"], "scale": "pixel / 255", "layout": "NCHW",
                       "channel_order": "RGB"},
        "files": {fname: {
            "format": "tflite", "precision": "fp32" if case["dtype"] == "float32" else "int8",
            "input": {"name": "x", "shape": shape, "shape_nchw": nchw, "layout": case["layout"],
                      "dtype": case["dtype"], "quant": case["quant"]},
            "output": {"name": "y", "shape": [1, 2], "dtype": "float32", "quant": None}}},
        "android": {"model_file": fname},
    }


def host_model_input(img, manifest: dict) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
    """What the host feeds the model for ``img`` under ``manifest``: (uint8 crop HWC, resized
    size (w, h) before the crop, model input in its layout and dtype). The same code as the
    host: ``data.Preprocess`` and the device runner's ``Session.to_model_input``."""
    from bench_device.agent import Session

    from .data import Preprocess
    entry = manifest["files"][manifest["android"]["model_file"]]
    pre = Preprocess.from_dict({k: manifest["preprocess"][k] for k in
                                ("resize", "crop", "mean", "std", "interpolation")},
                               manifest["preprocess"]["crop"])
    rgb = img.convert("RGB")
    w, h = rgb.size
    s = pre.resize / min(w, h)
    size = (max(pre.crop, round(w * s)), max(pre.crop, round(h * s)))
    crop = np.asarray(pre.resized(rgb))
    x = pre.normalise(crop)[None]
    model_in = Session.to_model_input(types.SimpleNamespace(entry=entry), x)
    return crop, size, model_in


def _num(v, dtype: str) -> str:
    if dtype == "float32":
        return str(np.float32(v))  # shortest text that parses back to the same float32
    return str(int(v))


def _array(values, dtype: str) -> str:
    return "[" + ",".join(_num(v, dtype) for v in np.asarray(values).ravel()) + "]"


def _dump(obj, indent: int = 0) -> str:
    """JSON with one key per line and number arrays on one line (raw strings pass through)."""
    pad, pad1 = " " * indent, " " * (indent + 1)
    if isinstance(obj, _Raw):
        return obj.text
    if isinstance(obj, dict):
        items = [f"{pad1}{json.dumps(k)}: {_dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, _Raw)) for v in obj):
        return "[\n" + ",\n".join(pad1 + _dump(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


class _Raw:
    def __init__(self, text: str):
        self.text = text


def vector_documents() -> dict[str, tuple[object, str]]:
    """{file stem: (PIL image, JSON text)} for every vector file."""
    docs = {}
    for stem, img, cases in vector_specs():
        rgb = np.asarray(img.convert("RGB"))
        out_cases = []
        for case in cases:
            m = case_manifest(case)
            crop, size, model_in = host_model_input(img, m)
            out_cases.append({
                "name": case["name"], "manifest": m, "resized_size": list(size),
                "crop_size": [int(crop.shape[1]), int(crop.shape[0])],
                "crop_rgb": _Raw(_array(crop, "uint8")),
                "expected_dtype": case["dtype"], "expected_shape": list(model_in.shape),
                "expected": _Raw(_array(model_in, case["dtype"])),
            })
        doc = {"vectors_version": VECTORS_VERSION, "image": stem + ".png",
               "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
               "rgb": _Raw(_array(rgb, "uint8")), "cases": out_cases}
        docs[stem] = (img, _dump(doc) + "\n")
    return docs


def make_vectors(out_dir=VECTORS_DIR) -> list[Path]:
    """Write the vectors (``<stem>.png``, ``<stem>.json``, ``index.json``) into ``out_dir``.

    JSON layout, per image: ``width``, ``height``, ``rgb`` (row-major H x W x 3 uint8) and
    ``cases``: each with a full ``manifest``, ``resized_size`` [w, h] before the crop,
    ``crop_rgb`` (crop x crop x 3 uint8 after resize and crop), ``expected`` (the model input,
    flattened in the manifest's layout: float32 values written as the shortest decimal that
    reads back as the same float32, or integers for int8/uint8) and ``expected_shape``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    docs = vector_documents()
    for stem, (img, text) in docs.items():
        img.save(out / f"{stem}.png")
        (out / f"{stem}.json").write_text(text)
        written += [out / f"{stem}.png", out / f"{stem}.json"]
    index = {"vectors_version": VECTORS_VERSION,
             "about": "Preprocessing test vectors: regenerate with `python -m edgeconv.android vectors`",
             "files": [f"{stem}.json" for stem in docs],
             "manifest_checks": "manifests.json"}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    (out / "manifests.json").write_text(_dump(manifest_check_cases()) + "\n")
    return written + [out / "index.json", out / "manifests.json"]


def manifest_check_cases() -> list[dict]:
    """Good and bad manifests with check_manifest's verdict, for the app's own parser."""
    good = case_manifest(_case("good", 32, 28, HALF, "bilinear", "NHWC", "int8", INT8_Q))
    f = "model_int8.tflite"

    def variant(name, edit):
        m = copy.deepcopy(good)
        edit(m)
        return name, m

    def entry(m):
        return m["files"][f]
    variants = [
        ("good", copy.deepcopy(good)),
        variant("layout_nchw_ok", lambda m: entry(m)["input"].update(layout="NCHW", shape=[1, 3, 28, 28])),
        variant("no_android_section_ok", lambda m: m.pop("android")),
        variant("bad_layout", lambda m: entry(m)["input"].update(layout="CHW")),
        variant("bad_dtype", lambda m: entry(m)["input"].update(dtype="float16", quant=None)),
        variant("int8_without_quant", lambda m: entry(m)["input"].update(quant=None)),
        variant("labels_count", lambda m: m.update(labels=["a", "b", "c"])),
        variant("missing_crop", lambda m: m["preprocess"].pop("crop")),
        variant("bad_interpolation", lambda m: m["preprocess"].update(interpolation="lanczos")),
        variant("no_tflite", lambda m: m.update(files={"model_int8.onnx": {
            **entry(m), "format": "onnx"}})),
        variant("model_file_missing", lambda m: m["android"].update(model_file="model_fp32.tflite")),
        variant("crop_vs_shape", lambda m: m["preprocess"].update(crop=32)),
        variant("int8_output_without_quant", lambda m: entry(m)["output"].update(dtype="int8")),
    ]
    return [{"name": n, "ok": not check_manifest(m), "problems": check_manifest(m), "manifest": m}
            for n, m in variants]


# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeconv.android", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("vectors", help="regenerate the app's preprocessing test vectors")
    v.add_argument("--out", default=str(VECTORS_DIR), help=f"folder (default: {VECTORS_DIR})")
    c = sub.add_parser("check", help="list the problems the app would have with a manifest")
    c.add_argument("manifest", help="manifest.json or an artifact folder")
    i = sub.add_parser("install", help="copy a model, its manifest and a sample image into the app")
    i.add_argument("artifact_dir")
    i.add_argument("app_dir", nargs="?", default=str(APP_DIR))
    i.add_argument("--file", default=None, help="the .tflite file (default: int8, else fp32)")
    i.add_argument("--sample", default=None, help="image to bundle as sample.png")
    a = ap.parse_args(argv)
    if a.cmd == "vectors":
        for p in make_vectors(a.out):
            print(p)
        return 0
    if a.cmd == "check":
        p = Path(a.manifest)
        p = p / "manifest.json" if p.is_dir() else p
        problems = check_manifest(json.loads(p.read_text()))
        for line in problems:
            print(line)
        print("ok: the app can consume this manifest" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    try:
        dest = install(a.artifact_dir, a.app_dir, a.file, a.sample)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"installed into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
