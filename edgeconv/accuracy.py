"""Accuracy metrics: output agreement between two models, and accuracy against labels."""
from __future__ import annotations

import numpy as np


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio, 10 log10(|ref|^2 / |ref - test|^2), in dB."""
    ref, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    noise = np.sum((ref - test) ** 2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(np.sum(ref ** 2) / noise))


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def max_errors(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """(max absolute error, max absolute error relative to the reference's largest magnitude)."""
    diff = float(np.max(np.abs(np.asarray(reference, np.float64) - test)))
    scale = float(np.max(np.abs(reference))) or 1.0
    return diff, diff / scale
