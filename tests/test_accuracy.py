"""Accuracy checks (issue #5): paired metrics on hand-made cases, the digits pair trained and
held within the stated int8 drop in every runtime, localisation of a broken block, and bad
input (unreadable files, mismatched or empty folders, a failing runtime)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from edgeconv.accuracy import check, check_artifact, eval_data, paired_delta, run_file, topk_correct
from edgeconv.data import load_data
from edgeconv.artifact import Artifact, sha256
from edgeconv.exporters import export
from edgeconv.zoo import create_model, load_weights

MIN_FP32_TOP1 = 0.90      # measured ~0.97-0.99 for both after 4 epochs (conftest's digits_run)
MAX_INT8_DROP_POINTS = 1.0
MIN_AGREEMENT = 0.97


# ---------------------------------------------------------------- metrics on known cases
def test_paired_delta_hand_made_case():
    fp32 = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    int8 = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 0], bool)   # two lost, one gained
    d = paired_delta(fp32, int8)
    # d = (-1, -1, 0 x6, +1, 0): mean -0.1, sd (ddof 1) = sqrt(2.9 / 9), half width 1.96 sd / sqrt(10)
    half = 1.959963984540054 * np.sqrt(2.9 / 9) / np.sqrt(10)
    assert d["delta"] == pytest.approx(-0.1)
    assert d["ci_low"] == pytest.approx(-0.1 - half) and d["ci_low"] == pytest.approx(-0.45183, abs=1e-5)
    assert d["ci_high"] == pytest.approx(-0.1 + half) and d["ci_high"] == pytest.approx(0.25183, abs=1e-5)
    assert (d["n"], d["better"], d["worse"]) == (10, 1, 2)


def test_paired_delta_identical_and_shifted():
    same = np.array([1, 0, 1, 1], bool)
    assert paired_delta(same, same)[("delta")] == 0 and paired_delta(same, same)["ci_high"] == 0
    all_lost = paired_delta(np.ones(5, bool), np.zeros(5, bool))
    assert all_lost["delta"] == -1 and all_lost["ci_low"] == all_lost["ci_high"] == -1
    with pytest.raises(ValueError):
        paired_delta(np.ones(3), np.ones(4))


def test_topk_correct():
    logits = np.array([[0.1, 0.5, 0.2, 0.9, 0.0, 0.3], [5, 4, 3, 2, 1, 0]], np.float32)
    y = np.array([1, 5])
    assert topk_correct(logits, y, 1).tolist() == [False, False]
    assert topk_correct(logits, y, 2).tolist() == [True, False]
    assert topk_correct(logits, y, 6).tolist() == [True, True]


# ---------------------------------------------------------------- the digits pair
@pytest.fixture(scope="module")
def digits_pair(digits_run, tmp_path_factory):
    """tiny and its twin trained on digits and exported to every format by `edgeconv run`
    (conftest's digits_run, 4 epochs): the models from their checkpoints, copies of their
    exports (the tests here write into them), checked on the held-out 500."""
    run_dir = digits_run[0]
    out = {}
    for twin, side in ((False, "model"), (True, "twin")):
        model = create_model("tiny", twin=twin)
        load_weights(model, run_dir / "checkpoints" / f"{side}.pt")
        metrics = json.loads((run_dir / "checkpoints" / f"{side}.json").read_text())
        assert metrics["config"]["epochs"] == 4   # what the thresholds above were measured with
        copy = tmp_path_factory.mktemp(side) / "art"
        shutil.copytree(run_dir / "artifacts" / side, copy)
        art = Artifact.load(copy)
        ev = eval_data(art, "digits")
        out[twin] = (model, metrics, art, ev, check(art.path, "digits", max_drop=MAX_INT8_DROP_POINTS))
    return out


@pytest.mark.parametrize("twin", [False, True], ids=["model", "twin"])
def test_digits_trained_and_int8_within_drop_everywhere(digits_pair, twin):
    _, metrics, art, ev, res = digits_pair[twin]
    assert metrics["fp32_top1"] >= MIN_FP32_TOP1
    assert ev.info["count"] == 500 and ev.info["calibration"]["disjoint"]
    assert {r["runtime"] for r in res["rows"]} == {"onnxruntime", "litert", "executorch"}
    for r in res["rows"]:
        assert "error" not in r, r
        assert r["fp32"]["top1"] == pytest.approx(metrics["fp32_top1"], abs=0.005)
        assert r["drop_points"] <= MAX_INT8_DROP_POINTS, r
        assert r["agreement"] >= MIN_AGREEMENT, r
    assert res["ok"]
    saved = json.loads((art.path / "accuracy.json").read_text())
    assert saved["rows"][0]["delta_top1"]["method"].startswith("normal interval")


def test_check_cli_table_json_and_gate(digits_pair):
    from edgeconv.cli import main
    art = digits_pair[False][2]
    r = CliRunner().invoke(main, ["check", str(art.path), "--data", "digits", "--limit", "100"])
    assert r.exit_code == 0, r.output
    assert "onnxruntime" in r.output and "executorch" in r.output and "95% CI" in r.output
    assert json.loads((art.path / "accuracy.json").read_text())["data"]["count"] == 100
    strict = CliRunner().invoke(main, ["check", str(art.path), "--data", "digits", "--limit", "100",
                                       "--max-drop", "-100"])
    assert strict.exit_code == 1


def test_one_runtime_failing_keeps_the_others(digits_pair, tmp_path):
    _, _, art, ev, _ = digits_pair[False]
    broken = tmp_path / "broken"
    shutil.copytree(art.path, broken)
    (broken / "model_int8.tflite").write_bytes(b"not a flatbuffer")
    entry = json.loads((broken / "manifest.json").read_text())  # the manifest vouching for it: the runtime refuses
    entry["files"]["model_int8.tflite"].update(sha256=sha256(broken / "model_int8.tflite"), bytes=16)
    (broken / "manifest.json").write_text(json.dumps(entry))
    res = check(broken, "digits")
    rows = {r["runtime"]: r for r in res["rows"]}
    assert "model_int8.tflite" in rows["litert"]["error"] and not rows["litert"]["ok"]
    assert rows["litert"]["fp32"]["top1"] > 0.9          # what did work is still reported
    for rt in ("onnxruntime", "executorch"):
        assert "error" not in rows[rt] and rows[rt]["ok"]
    assert not res["ok"]
    on_disk = json.loads((broken / "accuracy.json").read_text())
    assert any("error" in r for r in on_disk["rows"]) and len(on_disk["rows"]) == 3

    class FlakyDevice:  # stands in for a device session (edgeconv.device.AgentSession) that loses its link
        device = type("D", (), {"name": "flaky"})

        def run_inputs(self, path, x):
            if path.suffix == ".onnx":
                raise ConnectionError("device went away")
            return run_file(art, path.name, x)
    res = check_artifact(art, ev, session=FlakyDevice())
    rows = {r["runtime"]: r for r in res["rows"]}
    assert "device went away" in rows["onnxruntime"]["error"] and rows["litert"]["ok"]
    assert rows["litert"]["device"]["name"] == "flaky" and rows["litert"]["device"]["agreement_with_host_int8"] == 1


# ---------------------------------------------------------------- localisation
def test_localize_ranks_a_broken_block_first(digits_pair):
    from edgeconv.localize import corrupt_weight_scale, localize, quantize_int8
    model = digits_pair[False][0]
    calib = load_data("digits", input_shape=model.input_shape, preprocess=model.spec.preprocess, calib_count=32).x
    clean = localize(model, calib)
    assert [b["name"] for b in clean["blocks"]] == [n for n, _ in model.named_blocks()]
    assert clean["logits_sqnr_db"] > 15
    names = [n for n, _ in model.named_blocks()]
    for victim in ("blocks.2", "blocks.4"):
        gm = quantize_int8(model, calib)
        assert corrupt_weight_scale(gm, victim, names, factor=3.0) >= 1
        res = localize(model, calib, quantized=gm)
        assert res["ranked"][0] == victim, res["blocks"]
        assert res["logits_sqnr_db"] < clean["logits_sqnr_db"]
        # fed fp32 inputs, the blocks after the broken one keep their own error, while the error
        # accumulated in the int8 model falls behind it
        before = {b["name"]: b for b in clean["blocks"]}
        after = [b for b in res["blocks"] if names.index(b["name"]) > names.index(victim)]
        assert all(abs(b["alone_db"] - before[b["name"]]["alone_db"]) < 1.0 for b in after), res["blocks"]
        assert all(b["sqnr_db"] < before[b["name"]]["sqnr_db"] - 1.0 for b in after[:1]), res["blocks"]


def _logits_of(gm, x):
    with torch.no_grad():
        return np.concatenate([gm(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])


def test_bias_correction_removes_the_int8_mean_shift(digits_pair):
    """With the recipe's bias correction the int8 graph's logits keep the fp32 means on the
    calibration samples (the mean shift shrinks at least fivefold), the float model is left
    untouched, and held-out agreement does not get worse."""
    from edgeconv.localize import quantize_int8
    from edgeconv.quantize import QuantRecipe, fold_batchnorm
    model = digits_pair[False][0]
    kw = dict(input_shape=model.input_shape, preprocess=model.spec.preprocess, calib_count=64)
    calib, held_out = load_data("digits", **kw).x, load_data("digits", split="eval", limit=200, **kw).x
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref, ref_held = (fold_batchnorm(model)(torch.from_numpy(x)).numpy() for x in (calib, held_out))
    plain = quantize_int8(model, calib, QuantRecipe(bias_correction=False))
    corrected = quantize_int8(model, calib)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    shift = {name: np.abs((_logits_of(gm, calib) - ref).mean(0)).mean()
             for name, gm in (("plain", plain), ("corrected", corrected))}
    assert shift["plain"] > 0 and shift["corrected"] < shift["plain"] / 5, shift
    agree = {name: float(np.mean(_logits_of(gm, held_out).argmax(1) == ref_held.argmax(1)))
             for name, gm in (("plain", plain), ("corrected", corrected))}
    assert agree["corrected"] >= agree["plain"] - 0.01, agree


def test_onnx_bias_correction_in_onnxruntime(digits_pair, tmp_path):
    """The same for the ONNX QDQ file, run by ONNX Runtime's int8 kernels: the logits' mean
    shift shrinks, every conv stays int8 (QLinearConv) and the manifest records the recipe."""
    from edgeconv.quantize import QuantRecipe
    model = digits_pair[False][0]
    kw = dict(input_shape=model.input_shape, preprocess=model.spec.preprocess, calib_count=64)
    calib = load_data("digits", **kw).x
    shift = {}
    for bc in (False, True):
        art = export(model, calib=calib, out=tmp_path / str(bc), formats=["onnx"],
                     recipe=QuantRecipe(bias_correction=bc))
        assert not art.errors and art.manifest.quant["bias_correction"] is bc
        report = art.files["model_int8.onnx"].int8_report
        assert report["convs_int8"] == report["convs"] > 0 and report["ops_int8"] == report["ops"], report
        ref = run_file(art, "model_fp32.onnx", calib)
        shift[bc] = np.abs((run_file(art, "model_int8.onnx", calib) - ref).mean(0)).mean()
    assert shift[True] < shift[False] / 3, shift


def test_quant_config_round_trip_and_old_recipes():
    from edgeconv.quantize import QuantRecipe
    q = QuantRecipe(keep_fp32=("blocks.0",), method="minmax")
    assert QuantRecipe.from_dict(q.to_dict()) == q and q.bias_correction
    old = {k: v for k, v in q.to_dict().items() if k != "bias_correction"} | {"version": 1}
    assert QuantRecipe.from_dict(old).bias_correction is False
    with pytest.raises(ValueError, match="unknown quantization option"):
        QuantRecipe.from_dict({"bias_corection": True})


def test_localize_cli_with_keep_fp32(digits_pair):
    from edgeconv.cli import main
    art = digits_pair[False][2]
    r = CliRunner().invoke(main, ["check", str(art.path), "--data", "digits", "--limit", "64", "--formats", "onnx",
                                  "--localize", "--keep-fp32", "stem,classifier"])
    assert r.exit_code == 0, r.output
    assert "per-block int8 error" in r.output and "keeping stem, classifier in fp32" in r.output
    saved = json.loads((art.path / "accuracy.json").read_text())
    assert len(saved["localize"]["blocks"]) == len(art.manifest.arch)
    assert saved["what_if"]["keep_fp32"]["keep_fp32"] == ["stem", "classifier"]


# ---------------------------------------------------------------- bad input
def _digit_folder(root, names=None, n=40):
    from sklearn.datasets import load_digits
    d = load_digits()
    for i in range(n):
        label = int(d.target[i])
        folder = root / (names[label] if names else str(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8), "L").save(folder / f"{i}.png")
    return root


def test_folder_with_unreadable_files_is_checked_with_a_warning(digits_pair, tmp_path):
    art = digits_pair[False][2]
    root = _digit_folder(tmp_path / "digits")
    (root / "3" / "corrupt.png").write_bytes(b"\x89PNG garbage")
    (root / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 2 file"):
        ev = eval_data(art, str(root))
    assert ev.info["count"] == 40 and ev.info["skipped"] == 2 and ev.info["split"] == "all"
    res = check_artifact(art, ev, formats=["onnx"])
    assert res["rows"][0]["fp32"]["top1"] > 0.8


def test_folder_classes_not_matching_labels_is_a_clear_error(digits_pair, tmp_path):
    from edgeconv.cli import main
    art = digits_pair[False][2]
    root = _digit_folder(tmp_path / "animals", names=["cat", "dog", "cow", "hen", "pig", "owl", "bee", "ant",
                                                      "elk", "fox"])
    with pytest.raises(ValueError, match="do not match the model's labels"):
        eval_data(art, str(root))
    r = CliRunner().invoke(main, ["check", str(art.path), "--data", str(root)])
    assert r.exit_code == 2 and "do not match" in r.output


def test_empty_or_unlabelled_folder_is_a_clear_error(digits_pair, tmp_path):
    art = digits_pair[False][2]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        eval_data(art, str(tmp_path / "empty"))
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    with pytest.raises(ValueError, match="not labelled"):
        eval_data(art, str(flat))


def test_tied_int8_logits_rank_like_argmax():
    from edgeconv.accuracy import top1_agreement, topk_correct
    logits = np.array([[0.5, 2.0, 2.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    labels = np.array([1, 0])
    assert topk_correct(logits, labels, 1).tolist() == [True, True]
    assert topk_correct(logits, np.array([2, 3]), 1).tolist() == [False, False]
    assert top1_agreement(logits, logits[:, ::-1][:, ::-1]) == 1.0


# ---------------------------------------------------------------- calibration never leaks into evaluation
def test_calibration_images_left_out_from_any_working_directory(tmp_path, monkeypatch):
    """Calibrate on a folder given relatively, then check from elsewhere, by another path and on a
    copy: the calibration images are recognised by content every time."""
    from edgeconv.cli import main
    work, other = tmp_path / "work", tmp_path / "elsewhere"
    _digit_folder(work / "imgs", n=40)
    other.mkdir()
    monkeypatch.chdir(work)
    res = CliRunner().invoke(main, ["export", "tiny", "--formats", "onnx", "--calib", "imgs", "--calib-count", "12",
                                    "--out", "art"])
    assert res.exit_code == 0, res.output
    cal = json.loads((work / "art" / "manifest.json").read_text())["calibration"]
    assert cal["source"] == str((work / "imgs").resolve()) and len(cal["digests"]) == 12
    shutil.copytree(work / "imgs", other / "copy")
    monkeypatch.chdir(other)
    for data in ("../work/imgs", "copy"):
        res = CliRunner().invoke(main, ["check", "../work/art", "--data", data, "--max-drop", "100"])
        assert res.exit_code == 0, res.output
        info = json.loads((work / "art" / "accuracy.json").read_text())["data"]
        assert info["count"] == 28 and info["calibration"]["left_out"] == 12 and info["calibration"]["disjoint"]
    # a manifest that fingerprints nothing (older edgeconv) cannot promise disjoint sets: it says so
    art = Artifact.load(work / "art")
    art.manifest.calibration = {"source": "imgs", "count": 12}
    art.save()
    with pytest.warns(UserWarning, match="no fingerprint of the calibration images"):
        ev = eval_data(art, "copy")
    assert ev.info["count"] == 40 and ev.info["calibration"]["disjoint"] is False


# ---------------------------------------------------------------- images and class indexes read right
def test_image_modes_are_converted_or_refused_with_a_count(tmp_path):
    root = tmp_path / "imgs"
    (root / "3").mkdir(parents=True)
    grey16 = np.full((40, 40), 32896, np.uint16)  # mid-grey in 16 bits: 128 in 8 bits, not clipped white
    Image.fromarray(grey16).save(root / "3" / "grey16.png")
    with Image.open(root / "3" / "grey16.png") as im:
        assert im.mode.startswith("I")
    Image.fromarray(np.full((40, 40), 128, np.uint8), "L").save(root / "3" / "grey8.png")
    Image.new("P", (40, 40)).save(root / "3" / "palette.png")
    Image.new("RGBA", (40, 40), (128, 128, 128, 255)).save(root / "3" / "rgba.png")
    Image.new("CMYK", (40, 40)).save(root / "3" / "cmyk.jpg")
    for i in range(2):
        Image.fromarray(np.zeros((40, 40), np.float32), "F").save(root / "3" / f"float{i}.tif")
    Image.fromarray(np.full((40, 40), 1 << 20, np.int32), "I").save(root / "3" / "deep.tif")
    with pytest.warns(UserWarning, match=r"skipped 3 image\(s\).*mode"):
        ds = load_data(root, input_shape=(3, 32, 32), preprocess={"mean": [0, 0, 0], "std": [1, 1, 1]},
                       split="all", labels=[str(i) for i in range(10)])
    by_name = dict(zip((Path(f).name for f in ds.files), ds.x))
    assert sorted(by_name) == ["cmyk.jpg", "grey16.png", "grey8.png", "palette.png", "rgba.png"]
    assert np.allclose(by_name["grey16.png"], by_name["grey8.png"], atol=1 / 255)  # scaled, not clipped to 1.0
    assert len(ds.skipped) == 3 and list(ds.y) == [3] * 5


def test_class_index_with_a_repeated_entry_names_the_line(tmp_path):
    root = tmp_path / "val"
    root.mkdir()
    Image.new("RGB", (40, 40)).save(root / "n01_1.JPEG")
    index = tmp_path / "classes.txt"
    index.write_text("n01 tench\nn02 goldfish\n\nn01 tench again\n")
    with pytest.raises(ValueError, match=r"classes.txt: line 4 repeats 'n01' \(first on line 1\)"):
        load_data(root, input_shape=(3, 32, 32), split="all", labels=["a", "b"], class_index=index)


def test_calibration_reads_class_folders_whatever_they_are_named(tmp_path):
    """The README's layout for `run` (a sub-folder per class) calibrates, whatever the folders are
    called: calibration needs images, not labels."""
    from edgeconv.data import calibration
    root = _digit_folder(tmp_path / "photos", names=["cat", "dog", "cow", "hen", "pig", "owl", "bee", "ant", "elk",
                                                     "fox"])
    ds = calibration(str(root), create_model("tiny"), 8)
    assert len(ds) == 8 and ds.describe()["source"] == str(root.resolve()) and len(ds.describe()["digests"]) == 8
