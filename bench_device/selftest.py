#!/usr/bin/env python3
"""Self-test of a device: the agent's own runtime adapters run one small conv.

``selftest/conv.{onnx,tflite,pte}`` hold the same Conv2d (1x1x4x4 -> 1x2x4x4, 3x3, padding
1); each runtime present on the device runs it through ``agent.get_runtime(name)`` and the
output is compared with numpy. A runtime that is not installed is reported as absent; one
that is installed but wrong fails the test.

    python3 selftest.py [--runtimes onnxruntime,litert,executorch]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent import RUNTIMES, get_runtime, peak_rss_mb  # noqa: E402

MODELS = Path(__file__).resolve().parent / "selftest"


def reference(x: np.ndarray) -> np.ndarray:
    w = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3) / 10
    b = np.array([0.5, -0.5], dtype=np.float32)
    xp = np.pad(x[0, 0], 1)
    out = np.empty((1, 2, 4, 4), dtype=np.float32)
    for o in range(2):
        for i in range(4):
            for j in range(4):
                out[0, o, i, j] = (xp[i:i + 3, j:j + 3] * w[o, 0]).sum() + b[o]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated (default: all)")
    p.add_argument("--require", default="", help="runtimes that must be present (comma-separated)")
    a = p.parse_args(argv)
    print(f"device: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores")
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    ref = reference(x)
    ok = True
    required = {r for r in a.require.split(",") if r}
    for name in [r for r in a.runtimes.split(",") if r]:
        cls = get_runtime(name)
        t0 = time.perf_counter()
        try:
            version = cls.version()
        except Exception as e:  # not installed: absent unless required
            print(f"  {name}: absent ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                  f"install: {cls.install}")
            ok &= name not in required
            continue
        try:
            y = cls(str(MODELS / f"conv{cls.suffix}"), 1).run(x)
            good = y.shape == ref.shape and np.allclose(y, ref, atol=1e-4)
        except Exception as e:  # installed but broken: a failure
            print(f"  {name} {version}: FAILED ({type(e).__name__}: {e})")
            ok = False
            continue
        ok &= good
        print(f"  {name} {version}: {'OK' if good else 'MISMATCH'} ({time.perf_counter() - t0:.2f} s, "
              f"sum {float(y.sum()):.4f})")
    print(f"peak RSS {peak_rss_mb():.0f} MB (under qemu it includes the emulator)")
    print("RESULT:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
