"""First contact: the wheel built from the checkout works installed (not editable) from any folder,
and the terminal holds only edgeconv's own lines."""
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLEAN = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed copy, not this checkout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with edgeconv installed from its wheel; the heavy dependencies are this
    environment's (a .pth line), so nothing is downloaded."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(root / "dist"), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((root / "dist").glob("edgeconv-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=300)
    py = root / "venv" / "bin" / "python"
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=600, env=CLEAN)
    assert inst.returncode == 0, inst.stderr[-2000:]
    venv_site = Path(subprocess.check_output([str(py), "-c", "import site; print(site.getsitepackages()[0])"],
                                             text=True, env=CLEAN).strip())
    assert (venv_site / "edgeconv" / "models").is_dir()
    # after the install, so that pip does not take this environment's edgeconv for the wheel's
    (venv_site / "zz_shared_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return root / "venv" / "bin", elsewhere


def test_wheel_works_from_any_folder(installed):
    bin_dir, cwd = installed
    where = subprocess.run([str(bin_dir / "python"), "-c", "import edgeconv.zoo as z; print(z.__file__)"],
                           cwd=cwd, capture_output=True, text=True, timeout=120, env=CLEAN)
    assert where.returncode == 0 and str(REPO) not in where.stdout and "site-packages" in where.stdout, where
    models = subprocess.run([str(bin_dir / "edgeconv"), "models", "--json"], cwd=cwd, capture_output=True,
                            text=True, timeout=300, env=CLEAN)
    assert models.returncode == 0, models.stderr
    import json
    names = {m["name"] for m in json.loads(models.stdout)}
    from edgeconv.zoo import list_models
    assert names == set(list_models()) and len(names) >= 4
    export = subprocess.run([str(bin_dir / "edgeconv"), "export", "tiny", "--formats", "onnx,tflite", "--out", "art",
                             "--calib-count", "16"], cwd=cwd, capture_output=True, text=True, timeout=600, env=CLEAN)
    assert export.returncode == 0, export.stderr[-3000:]
    assert sorted(p.name for p in (cwd / "art").glob("model_*")) == \
        ["model_fp32.onnx", "model_fp32.tflite", "model_int8.onnx", "model_int8.tflite"]
    setup = subprocess.run([str(bin_dir / "python"), "-c",
                            "from importlib import resources; print(resources.files('bench_device') / 'setup_arm64.sh')"],
                           cwd=cwd, capture_output=True, text=True, timeout=60, env=CLEAN)
    assert Path(setup.stdout.strip()).is_file() and "site-packages" in setup.stdout


# Lines edgeconv itself writes on stderr: its warnings and errors, progress, what it reads and writes.
OWN_STDERR = re.compile(r"^(warning:|error:|note:|calibration:|export |local |results:|reusing |resuming |"
                        r"nothing new|\s*$)")
FOREIGN = re.compile(r"absl|oneDNN|Failed to load|_pytree|training mode|XNNPACK delegate|cpuinfo|threadpool|"
                     r"^[IWEF]\d{4} |WARNING:|INFO:")


def test_terminal_holds_only_edgeconv_lines(tmp_path):
    """export (in two worker processes), check and bench of the tiny model: stdout is edgeconv's
    tables and lines, stderr only its own warnings and progress; with --verbose the native
    libraries speak again."""
    native = tmp_path / "native.log"

    def edgeconv(*args, verbose=False):
        argv = [sys.executable, "-m", "edgeconv", *(["--verbose"] if verbose else []), *map(str, args)]
        return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "EDGECONV_NATIVE_LOG": str(native)})

    runs = [edgeconv("export", "tiny", "--out", "art", "--calib-count", "16", "--workers", "2"),
            edgeconv("check", "art", "--data", "digits", "--limit", "32"),
            edgeconv("bench", "art", "--results", "r.jsonl", "--warmup", "1", "--min-runs", "3", "--min-seconds", "0"),
            edgeconv("verify", "art", "--count", "8")]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
        foreign = [line for line in r.stderr.splitlines() if not OWN_STDERR.match(line)]
        assert foreign == [], foreign
        assert not [line for line in (r.stdout + r.stderr).splitlines() if FOREIGN.search(line)]
    assert "warning: tiny has random weights" in runs[0].stderr  # edgeconv's own warnings still show
    # what the libraries said in the export workers went to the native log, and the workers' own logs are gone
    assert re.search(r"pid \d+ tflite \w+ export\n.*absl", native.read_text())
    assert not list(tmp_path.glob("native.log.*"))
    loud = edgeconv("check", "art", "--data", "digits", "--limit", "8", "--formats", "tflite,executorch",
                    verbose=True)
    assert loud.returncode == 0 and FOREIGN.search(loud.stderr), loud.stderr[-1000:]
