"""Bad inputs across config, data, artifacts, devices and the pipeline, as a hostile user gives
them: each case asserts the exit code (2 for bad input; 1 where the verb documents it), that the
message names the offending key, file or value, and that every file there before the call is
byte-identical after it (a results file may only grow by whole records).

One tiny artifact (ONNX fp32 + int8, 32x32) is exported once for the module; each case works in
a folder of its own with a copy of it where it needs one."""
from __future__ import annotations

import fnmatch
import inspect
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import click
import pytest
from click.testing import CliRunner
from PIL import Image

from edgeconv.cli import main

FAST_BENCH = ["--min-runs", "2", "--min-seconds", "0", "--warmup", "0"]
LABELS_10 = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    from edgeconv.data import calibration
    from edgeconv.exporters import export
    from edgeconv.zoo import create_model
    model = create_model("tiny")
    calib = calibration("digits", model, 8)
    art = export(model, calib=calib.x, out=tmp_path_factory.mktemp("shared") / "art", formats=("onnx",),
                 calib_info=calib.describe())
    assert not art.errors and art.manifest.complete
    return art.path


# -- helpers the cases use to build their inputs --------------------------------------------------
def art_copy(d: Path, src: Path, name: str = "a") -> Path:
    shutil.copytree(src, d / name)
    return d / name


def edit_manifest(path: Path, change: Callable[[dict], object]) -> None:
    m = json.loads((path / "manifest.json").read_text())
    out = change(m)
    (path / "manifest.json").write_text(out if isinstance(out, str) else json.dumps(m if out is None else out))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def digit_folder(root: Path, names=None, per_class: int = 2) -> Path:
    from sklearn.datasets import load_digits
    d = load_digits()
    counts: dict = {}
    for i, label in enumerate(d.target):
        if counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        folder = root / (names[label] if names else str(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8), "L").save(folder / f"{i}.png")
    return root


def run_config(text: str) -> Callable:
    def setup(d, art):
        write(d / "c.toml", text)
        return ["run", "c.toml", "--out", "run"]
    return setup


def inventory(text: str | bytes, verb=("bench",)) -> Callable:
    def setup(d, art):
        write(d / "inv.toml", text)
        a = art_copy(d, art)
        return [*verb, a, "--device", "x", "--inventory", "inv.toml", "--results", "r.jsonl", *FAST_BENCH]
    return setup


def manifest_case(change: Callable[[dict], object], verb: str = "bench") -> Callable:
    extra = {"bench": ["--results", "r.jsonl", *FAST_BENCH], "check": ["--data", "digits", "--limit", "5"],
             "verify": ["--count", "2"]}[verb]

    def setup(d, art):
        edit_manifest(art_copy(d, art), change)
        return [verb, "a", *extra]
    return setup


def with_artifact(*argv) -> Callable:
    def setup(d, art):
        art_copy(d, art)
        return list(argv)
    return setup


def swapped(verb: str) -> Callable:
    """The fp32 file copied over the int8 one: the silently-wrong case of the issue."""
    def setup(d, art):
        a = art_copy(d, art)
        shutil.copy(a / "model_fp32.onnx", a / "model_int8.onnx")
        return {"bench": ["bench", "a", "--results", "r.jsonl", *FAST_BENCH],
                "check": ["check", "a", "--data", "digits", "--limit", "5"],
                "verify": ["verify", "a", "--count", "2"]}[verb]
    return setup


def interrupted(verb: str) -> Callable:
    def setup(d, art):
        a = art_copy(d, art)
        (a / "model_int8.onnx").unlink()
        edit_manifest(a, lambda m: m["files"].pop("model_int8.onnx") and m.update(complete=False))
        return {"bench": ["bench", "a", "--results", "r.jsonl", *FAST_BENCH],
                "check": ["check", "a", "--data", "digits", "--limit", "5"],
                "verify": ["verify", "a", "--count", "2"]}[verb]
    return setup


def expected_sha(d: Path) -> str:
    return json.loads((d / "a" / "manifest.json").read_text())["files"]["model_int8.onnx"]["sha256"]


# A record of an earlier run (the file is a results file), before lines that are not records.
RECORD = json.dumps({"device": {"name": "local"}, "status": "error", "sha256": "0" * 64, "runtime": "onnxruntime",
                     "threads": 1, "file": "model_int8.onnx", "error": "an earlier failure"}) + "\n"


def images(setup_files: Callable[[Path], None], *argv) -> Callable:
    def setup(d, art):
        setup_files(d)
        return list(argv)
    return setup


def float_images(d: Path) -> None:
    (d / "imgs").mkdir()
    Image.fromarray(np.random.default_rng(0).random((40, 40)).astype(np.float32), "F").save(d / "imgs" / "a.tif")


def held_lock(folder: str, name: str | None = None) -> Callable:
    """The folder locked by this process (as another edgeconv process would hold it)."""
    def lock(d: Path):
        from edgeconv.artifact import FolderLock
        return FolderLock(d / folder, name=name)
    return lock


# -- the table ------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    setup: Callable
    code: int
    names: tuple                                 # what the message must name (text, or a function of the folder)
    new_ok: tuple[str, ...] = ()                 # files the call may add (glob, relative to the case folder)
    grows: tuple[str, ...] = ()                  # files the call may append whole lines to
    lock: Callable | None = None


def c(id, setup, code, *names, new_ok=(), grows=(), lock=None) -> Case:
    return Case(id, setup, code, names, tuple(new_ok), tuple(grows), lock)


CASES = [
    # config: every key and value checked, with the table it belongs to, before any stage
    c("run-threads-zero", run_config("[bench]\nthreads = [0]\n"), 2, "'threads' = [0]"),
    c("run-threads-float", run_config("[bench]\nthreads = [1.5]\n"), 2, "'threads' = [1.5]"),
    c("run-devices-empty", run_config("[bench]\ndevices = []\n"), 2, "'devices' is empty"),
    c("run-device-unknown", run_config("[bench]\ndevices = ['pi9']\n"), 2, "'devices'", "unknown device 'pi9'"),
    c("run-min-runs-negative", run_config("[bench]\nmin_runs = -1\n"), 2, "'min_runs' = -1"),
    c("run-warmup-negative", run_config("[bench]\nwarmup = -1\n"), 2, "'warmup' = -1"),
    c("run-min-seconds-nan", run_config("[bench]\nmin_seconds = nan\n"), 2, "'min_seconds' = nan"),
    c("run-min-seconds-over-max", run_config("[bench]\nmin_seconds = 500.0\n"), 2, "min_seconds=500.0",
      "max_seconds"),
    c("run-eval-limit-negative", run_config("[data]\neval_limit = -1\n"), 2, "'eval_limit' = -1"),
    c("run-key-in-other-table", run_config("[model]\nmodel = 'tiny'\n[bench]\nmodel = 'mobilenet_v2'\n"), 2,
      "'model' is in [bench] but belongs in [model]"),
    c("run-key-outside-tables", run_config("model = 'tiny'\n"), 2, "'model' is outside any table"),
    c("run-unknown-table", run_config("[foo]\nx = 1\n"), 2, "unknown table [foo]"),
    c("run-unknown-key", run_config("[bench]\nthread = [1]\n"), 2, "unknown key 'thread'"),
    c("run-quant-method", run_config("[quant]\nmethod = 'magic'\n"), 2, "[quant]", "method='magic'"),
    c("run-quant-keep-fp32", run_config("[quant]\nkeep_fp32 = ['blocks.99']\n"), 2, "keep_fp32", "blocks.99"),
    c("run-formats-empty", run_config("[export]\nformats = []\n"), 2, "'formats'"),
    c("run-formats-string", run_config("[export]\nformats = 'onnx'\n"), 2, "'formats' = 'onnx'"),
    c("run-runtime-of-no-format", run_config("[export]\nformats = ['onnx']\n[bench]\nruntimes = ['litert']\n"), 2,
      "'runtimes'", "'litert'"),
    c("run-pretrained-without-weights", run_config("[model]\npretrained = true\n"), 2, "'pretrained'", "tiny"),
    c("run-input-size-huge", run_config("[model]\ninput_size = 100000\n"), 2, "input_size=100000"),
    c("run-weights-not-checkpoint", lambda d, a: (write(d / "w.pt", b"garbage"),
                                                  run_config("[model]\nweights = 'w.pt'\n")(d, a))[1], 2,
      "'weights'", "w.pt"),
    c("run-class-index-with-digits", lambda d, a: (write(d / "ci.txt", "n01\n"),
                                                   run_config("[data]\nclass_index = 'ci.txt'\n")(d, a))[1], 2,
      "'class_index'"),
    c("run-data-classes-unknown", lambda d, a: (digit_folder(d / "imgs", ["c%d" % i for i in range(10)]),
                                                run_config("[data]\ndata = 'imgs'\n")(d, a))[1], 2,
      "'data'", "c0"),
    c("run-config-binary", lambda d, a: (write(d / "c.toml", b"\xff\xfe\x00"), ["run", "c.toml", "--out", "run"])[1],
      2, "c.toml", "not a text file"),
    c("run-config-missing", lambda d, a: ["run", "nope.toml", "--out", "run"], 2, "nope.toml"),
    c("run-model-card-missing", run_config("[model]\nmodel = 'nope.toml'\n"), 2, "'model'", "nope.toml"),
    c("run-inventory-missing", run_config("[bench]\ndevices = ['x']\ninventory = 'inv.toml'\n"), 2, "inv.toml"),
    c("run-out-not-a-run-folder", lambda d, a: (write(d / "run" / "mine.txt", "keep"), ["run", "--out", "run"])[1],
      2, "not a run folder"),
    c("run-force-not-a-run-folder", lambda d, a: (write(d / "run" / "mine.txt", "keep"),
                                                  ["run", "--out", "run", "--force"])[1], 2, "not a run folder"),
    c("run-state-not-a-record", lambda d, a: (write(d / "run" / "run.json", "[1]"), ["run", "--out", "run"])[1],
      2, "run.json", "not a run record"),
    c("run-force-unreadable-artifact", lambda d, a: (write(d / "run" / "run.json", "{}"),
                                                     write(d / "run" / "artifacts" / "model" / "manifest.json", "{"),
                                                     write(d / "run" / "artifacts" / "model" / "mine.txt", "keep"),
                                                     ["run", "--out", "run", "--force"])[-1], 2,
      "manifest edgeconv cannot read", "deletes none"),

    # options: named with their value, before any work
    c("export-width-inf", lambda d, a: ["export", "tiny", "--width", "inf", "--out", "o"], 2, "width=inf"),
    c("export-width-huge", lambda d, a: ["export", "tiny", "--width", "1e6", "--out", "o"], 2, "width=1000000.0"),
    c("export-input-size-huge", lambda d, a: ["export", "tiny", "--input-size", "100000", "--out", "o"], 2,
      "input_size=100000"),
    c("export-input-size-zero", lambda d, a: ["export", "tiny", "--input-size", "0", "--out", "o"], 2,
      "input_size=0"),
    c("export-calib-count-zero", lambda d, a: ["export", "tiny", "--calib-count", "0", "--out", "o"], 2,
      "--calib-count"),
    c("export-calib-count-huge", lambda d, a: ["export", "tiny", "--calib-count", "1000000", "--out", "o"], 2,
      "calib_count=1000000"),
    c("export-format-unknown", lambda d, a: ["export", "tiny", "--formats", "onnx,coreml", "--out", "o"], 2,
      "coreml"),
    c("export-precision-unknown", lambda d, a: ["export", "tiny", "--precision", "int4", "--out", "o"], 2, "int4"),
    c("export-keep-fp32-unknown", lambda d, a: ["export", "tiny", "--formats", "onnx", "--keep-fp32", "blocks.99",
                                                "--out", "o"], 2, "--keep-fp32", "blocks.99"),
    c("export-weights-not-checkpoint", lambda d, a: (write(d / "w.pt", b"garbage"),
                                                     ["export", "tiny", "--weights", "w.pt", "--out", "o"])[1], 2,
      "w.pt", "not a PyTorch checkpoint"),
    c("info-width-absurd", lambda d, a: ["info", "tiny", "--width", "1e300"], 2, "width=1e+300"),
    c("train-epochs-zero", lambda d, a: ["train", "tiny", "--epochs", "0", "--out", "t.pt"], 2, "--epochs"),
    c("train-data-folder", lambda d, a: ["train", "tiny", "--data", "imgs", "--out", "t.pt"], 2, "'imgs'"),
    c("bench-threads-zero", with_artifact("bench", "a", "--threads", "0", *FAST_BENCH), 2, "--threads", "'0'"),
    c("bench-min-runs-negative", with_artifact("bench", "a", "--min-runs", "-3"), 2, "--min-runs", "-3"),
    c("bench-warmup-negative", with_artifact("bench", "a", "--warmup", "-1"), 2, "--warmup", "-1"),
    c("bench-min-seconds-over-max", with_artifact("bench", "a", "--min-seconds", "200"), 2, "min_seconds=200.0",
      "max_seconds=120.0"),
    c("bench-affinity-garbage", with_artifact("bench", "a", "--affinity", "x,y", *FAST_BENCH), 2, "affinity='x,y'"),
    c("bench-device-empty", with_artifact("bench", "a", "--device", "", *FAST_BENCH), 2, "--device"),
    c("bench-runtime-unknown", with_artifact("bench", "a", "--runtime", "tensorrt", *FAST_BENCH), 2, "tensorrt"),
    c("check-limit-zero", with_artifact("check", "a", "--data", "digits", "--limit", "0"), 2, "--limit", "0"),
    c("check-max-drop-nan", with_artifact("check", "a", "--data", "digits", "--max-drop", "nan"), 2, "--max-drop",
      "nan"),
    c("verify-count-huge", with_artifact("verify", "a", "--count", "100000"), 2, "--count 100000"),
    c("verify-min-agreement", with_artifact("verify", "a", "--min-agreement", "2", "--count", "2"), 2,
      "min_agreement=2.0"),

    # data: images, folders and class indexes
    c("calib-folder-missing", lambda d, a: ["export", "tiny", "--calib", "nope", "--out", "o"], 2, "'nope'"),
    c("calib-folder-empty", lambda d, a: ((d / "e").mkdir(), ["export", "tiny", "--calib", "e", "--out", "o"])[1],
      2, "holds no image files"),
    c("calib-npy-nan", lambda d, a: (np.save(d / "c.npy", np.full((2, 3, 32, 32), np.nan, np.float32)),
                                     ["export", "tiny", "--calib", "c.npy", "--out", "o"])[1], 2, "c.npy", "NaN"),
    c("calib-npy-shape", lambda d, a: (np.save(d / "c.npy", np.zeros((2, 1, 8, 8), np.float32)),
                                       ["export", "tiny", "--calib", "c.npy", "--out", "o"])[1], 2, "c.npy",
      "(2, 1, 8, 8)"),
    c("calib-only-float-images", images(float_images, "export", "tiny", "--calib", "imgs", "--formats", "onnx",
                                        "--precision", "int8", "--out", "o"), 2, "skipped 1 image(s)", "mode F",
      "no readable images"),
    c("class-index-repeated", lambda d, a: (write(d / "imgs" / "n01_a.png", b""), write(d / "ci.txt", "n01\nn02\nn01\n"),
                                            ["export", "tiny", "--calib", "imgs", "--class-index", "ci.txt",
                                             "--out", "o"])[-1], 2, "ci.txt", "line 3 repeats 'n01'"),
    c("class-index-binary", lambda d, a: (write(d / "imgs" / "n01_a.png", b""), write(d / "ci.txt", b"\xff\xfe\x00"),
                                          ["export", "tiny", "--calib", "imgs", "--class-index", "ci.txt",
                                           "--out", "o"])[-1], 2, "ci.txt", "not a text file"),
    c("class-index-with-digits", lambda d, a: (write(d / "ci.txt", "n01\n"),
                                               ["export", "tiny", "--class-index", "ci.txt", "--out", "o"])[1], 2,
      "--class-index ci.txt"),
    c("check-folder-classes-unknown", lambda d, a: (art_copy(d, a), digit_folder(d / "imgs", LABELS_10),
                                                    ["check", "a", "--data", "imgs"])[-1], 2, "do not match",
      "eight"),
    c("check-folder-unlabelled", lambda d, a: (art_copy(d, a), write(d / "imgs" / "x.png", b""),
                                               Image.new("RGB", (8, 8)).save(d / "imgs" / "x.png"),
                                               ["check", "a", "--data", "imgs"])[-1], 2, "not labelled"),
    c("check-class-index-too-long", lambda d, a: (art_copy(d, a), write(d / "imgs" / "n01_a.png", b""),
                                                  write(d / "ci.txt", "".join(f"n{i:02d}\n" for i in range(20))),
                                                  ["check", "a", "--data", "imgs", "--class-index", "ci.txt"])[-1], 2,
      "ci.txt", "20 classes", "10 labels"),

    # artifacts: manifests that are not ones, files that are not the exported ones
    c("manifest-empty-object", manifest_case(lambda m: {}), 2, "manifest.json", "schema_version"),
    c("manifest-a-list", manifest_case(lambda m: [1, 2]), 2, "manifest.json", "list"),
    c("manifest-no-model", manifest_case(lambda m: m.pop("model") and None), 2, "missing key 'model'"),
    c("manifest-preprocess-list", manifest_case(lambda m: m.update(preprocess=[1]), "check"), 2, "'preprocess'"),
    c("manifest-calibration-string", manifest_case(lambda m: m.update(calibration="x"), "verify"), 2,
      "'calibration'"),
    c("manifest-recipe-method", manifest_case(lambda m: m["quant"].update(method="magic")), 2, "quant",
      "method='magic'"),
    c("manifest-file-outside", manifest_case(lambda m: m["files"].update(
        {"../x.onnx": m["files"].pop("model_int8.onnx")})), 2, "'../x.onnx'"),
    c("manifest-bytes-string", manifest_case(lambda m: m["files"]["model_int8.onnx"].update(bytes="big")), 2,
      "'bytes'", "big"),
    c("manifest-requested-garbage", manifest_case(lambda m: m.update(requested=[["onnx"]])), 2, "requested"),
    c("manifest-labels-string", manifest_case(lambda m: m.update(labels="abc"), "check"), 2, "'labels'"),
    c("manifest-not-json", manifest_case(lambda m: "{nope"), 2, "manifest.json", "not valid JSON"),
    c("manifest-a-folder", lambda d, a: (art_copy(d, a), (d / "a" / "manifest.json").unlink(),
                                         (d / "a" / "manifest.json").mkdir(), ["verify", "a"])[-1], 2,
      "manifest.json", "cannot be read"),
    c("no-manifest", lambda d, a: ((d / "a").mkdir(), ["bench", "a"])[1], 2, "not an artifact folder"),
    c("swapped-file-bench", swapped("bench"), 1, "model_int8.onnx", expected_sha, new_ok=("r.jsonl",)),
    c("swapped-file-check", swapped("check"), 1, "model_int8.onnx", expected_sha, new_ok=("a/accuracy.json",)),
    c("swapped-file-verify", swapped("verify"), 1, "model_int8.onnx", expected_sha, new_ok=("a/verify.json",)),
    c("reference-replaced", lambda d, a: (art_copy(d, a), write(d / "a" / "reference.pt", b"garbage"),
                                          ["verify", "a", "--count", "2"])[-1], 2, "reference.pt", "sha256"),
    c("model-file-a-folder", lambda d, a: (art_copy(d, a), (d / "a" / "model_int8.onnx").unlink(),
                                           (d / "a" / "model_int8.onnx").mkdir(),
                                           ["bench", "a", "--results", "r.jsonl", *FAST_BENCH])[-1], 1,
      "model_int8.onnx", "not a regular file", new_ok=("r.jsonl",)),
    c("interrupted-bench", interrupted("bench"), 2, "did not finish", "onnx int8"),
    c("interrupted-check", interrupted("check"), 2, "did not finish", "onnx int8"),
    c("interrupted-verify", interrupted("verify"), 1, "did not finish", "onnx int8", new_ok=("a/verify.json",)),
    c("export-force-foreign-folder", lambda d, a: (write(d / "o" / "mine.txt", "keep"),
                                                   ["export", "tiny", "--formats", "onnx", "--out", "o",
                                                    "--force"])[1], 2, "not an artifact folder"),
    c("export-force-unreadable-manifest", lambda d, a: (art_copy(d, a), write(d / "a" / "manifest.json", "{}"),
                                                        write(d / "a" / "mine.txt", "keep"),
                                                        ["export", "tiny", "--formats", "onnx", "--out", "a",
                                                         "--force"])[-1], 2, "cannot read", "deletes none"),
    c("export-other-settings-no-force", lambda d, a: (art_copy(d, a),
                                                      ["export", "tiny", "--formats", "onnx", "--calib-count", "9",
                                                       "--out", "a"])[-1], 2, "--force"),

    # results files
    c("results-not-a-results-file", lambda d, a: (art_copy(d, a), write(d / "README.md", "# mine\n"),
                                                  ["bench", "a", "--results", "README.md", *FAST_BENCH])[-1], 2,
      "README.md", "holds no benchmark records"),
    c("results-garbage-lines-bench", lambda d, a: (art_copy(d, a), write(d / "r.jsonl", RECORD + 'garbage\n[1]\n{"device": 3}\n'),
                                                   ["bench", "a", "--results", "r.jsonl", "--precision", "int8",
                                                    *FAST_BENCH])[-1], 0, "r.jsonl", "skipped 3 line(s)",
      grows=("r.jsonl",)),
    c("results-garbage-lines-report", lambda d, a: (write(d / "x" / "results.jsonl",
                                                          'garbage\n{"device": {"name": "l"}, "status": "ok", '
                                                          '"samples_ms": "abc"}\n'), ["report", "x"])[-1], 0,
      "results.jsonl", "2 line(s)", new_ok=("x/report.*", "x/plots")),
    c("results-garbage-lines-predict", lambda d, a: (write(d / "p.jsonl", "garbage\n[1]\n"),
                                                     ["predict", "tiny", "--profile", "p.jsonl"])[-1], 2,
      "skipped 2 line(s)", "no profile"),
    c("report-not-a-run-folder", lambda d, a: ((d / "x").mkdir(), ["report", "x"])[1], 2, "not a run folder"),
    c("report-malformed-files", lambda d, a: (write(d / "x" / "run.json", '{"stages": "x"}'),
                                              write(d / "x" / "models.json", '{"model": 3}'),
                                              write(d / "x" / "artifacts" / "model" / "accuracy.json",
                                                    '{"rows": [{"runtime": "onnxruntime", "fp32": 1}]}'),
                                              ["report", "x"])[-1], 0, "run.json", "models.json", "accuracy.json",
      "left out", new_ok=("x/report.*", "x/plots")),

    # models the user describes
    c("card-preprocess-std-zero", lambda d, a: (write(d / "m.toml", 'source = "torch.nn:Identity"\ninput_size = 8\n'
                                                                   '[preprocess]\nstd = [0, 0, 0]\n'),
                                                ["info", "m.toml"])[-1], 2, "m.toml", "std=[0.0, 0.0, 0.0]"),
    c("spec-width-inf", lambda d, a: (write(d / "m.toml", 'name = "x"\nstem = "cn_r1_k3_s2_c16"\n'
                                                          'stages = [["ds_r1_k3_s1_c16"]]\nwidth = inf\n'),
                                      ["info", "m.toml"])[-1], 2, "m.toml", "width=inf"),
    c("run-keep-fp32-a-string", run_config("[quant]\nkeep_fp32 = 'blocks.0'\n"), 2, "keep_fp32='blocks.0'"),
    c("export-android-not-the-app", lambda d, a: ((d / "app").mkdir(), ["export", "tiny", "--formats", "tflite",
                                                                        "--android", "app", "--out", "o"])[1], 2,
      "not the Android demo app folder"),
    c("check-second-artifact-missing", lambda d, a: (art_copy(d, a), ["check", "a", "b", "--data", "digits"])[-1], 2,
      "b does not exist"),

    # devices
    c("inventory-devices-not-tables", inventory("devices = 3\n"), 2, "inv.toml", "'devices' must be tables"),
    c("inventory-device-not-a-table", inventory("[devices]\nx = 3\n"), 2, "inv.toml", "devices.x = 3"),
    c("inventory-port-string", inventory("[devices.x]\ntransport = 'ssh'\nhost = 'h'\nport = 'abc'\n"), 2,
      "devices.x.port = 'abc'"),
    c("inventory-transport-unknown", inventory("[devices.x]\ntransport = 'teleport'\n"), 2, "'teleport'"),
    c("inventory-key-unknown", inventory("[devices.x]\ntransport = 'ssh'\nhots = 'h'\n"), 2, "'hots'"),
    c("inventory-runtimes-unknown", inventory("[devices.x]\ntransport = 'local'\nruntimes = ['tensorrt']\n"), 2,
      "devices.x.runtimes"),
    c("inventory-binary", inventory(b"\xff\xfe\x00"), 2, "inv.toml", "not a text file"),
    c("device-unknown-bench", with_artifact("bench", "a", "--device", "pi9", *FAST_BENCH), 2, "'pi9'"),
    c("device-unknown-check", with_artifact("check", "a", "--data", "digits", "--device", "pi9"), 2, "'pi9'"),
    c("device-unknown-check-cmd", lambda d, a: ["device", "check", "pi9"], 2, "'pi9'"),

    # locks: a folder another edgeconv process is writing
    c("locked-artifact-export", lambda d, a: (art_copy(d, a), ["export", "tiny", "--formats", "onnx", "--calib-count",
                                                               "8", "--out", "a"])[-1], 2, "in use by another",
      "pid", lock=held_lock("a")),
    c("locked-results-bench", with_artifact("bench", "a", "--results", "r.jsonl", *FAST_BENCH), 2, "r.jsonl",
      "in use by another", lock=held_lock(".", ".r.jsonl.lock")),
    c("locked-run-folder", lambda d, a: (write(d / "run" / "run.json", "{}"), ["run", "--out", "run"])[-1], 2,
      "in use by another", lock=held_lock("run")),
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[k.id for k in CASES])
def test_bad_input(case: Case, artifact, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [str(a) for a in case.setup(tmp_path, artifact)]
    lock = case.lock(tmp_path) if case.lock else None
    if lock:
        lock.__enter__()
    try:
        before = snapshot(tmp_path)
        res = CliRunner().invoke(main, argv)
        after = snapshot(tmp_path)
    finally:
        if lock:
            lock.__exit__(None, None, None)
    out = " ".join(res.output.split())
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"{case.id}: raised {res.exception!r}\n{res.output[-2000:]}")
    assert res.exit_code == case.code, f"{case.id}: exit {res.exit_code}\n{res.output[-2000:]}"
    for name in case.names:
        name = name(tmp_path) if callable(name) else name
        assert name in out, f"{case.id}: {name!r} not in:\n{res.output[-2000:]}"
    if case.code == 2:
        assert "Traceback" not in res.output
    for name, data in before.items():
        assert name in after, f"{case.id}: {name} was deleted"
        if name in case.grows:
            assert after[name].startswith(data), f"{case.id}: {name} was rewritten, not appended to"
        else:
            assert after[name] == data, f"{case.id}: {name} was changed"
    new = [n for n in after if n not in before
           and not any(fnmatch.fnmatch(n, pat) or n.startswith(pat.rstrip("*") + "/") for pat in case.new_ok)]
    assert not new, f"{case.id}: wrote {new}"


def test_the_table_is_large_and_covers_every_class():
    assert len(CASES) >= 60 and len({k.id for k in CASES}) == len(CASES)
    prefixes = {k.id.split("-")[0] for k in CASES}
    for kind in ("run", "export", "calib", "class", "check", "manifest", "swapped", "interrupted", "results",
                 "inventory", "device", "locked", "bench", "verify"):
        assert kind in prefixes, kind


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))


def test_every_help_renders_as_paragraphs():
    """`--help` of every command exits 0 and its text wraps as prose: no line of it, but those of
    the verbatim paragraphs click marks with \\b, has a run of spaces mid-sentence (a paragraph's
    source indentation that click did not dedent); the commands taking a MODEL explain it."""
    import re
    runner = CliRunner()
    cmds = list(_commands(main))
    assert len(cmds) >= 10
    for path, cmd in cmds:
        res = runner.invoke(main, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        text = res.output.split("\nOptions:")[0]
        verbatim = {line.strip() for para in inspect.cleandoc(cmd.help or "").split("\n\n") if para.startswith("\b")
                    for line in para.splitlines()}
        for line in text.splitlines():
            assert line.strip() in verbatim or not re.search(r"\S {3,}\S", line), (path, line)
        if any(p.name == "model" for p in cmd.params if isinstance(p, click.Argument)) and path != ("train",):   # the zoo's tiny or a card: its own help says so
            assert "MODEL is a zoo name" in " ".join(text.split()), path
