"""Calibration and evaluation data, fed through the model's own preprocessing.

Sources (the ``--calib`` / ``--data`` value):

* ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, no download),
  upsampled to the model's input size; a fixed split keeps training, calibration and
  evaluation images apart.
* a folder: one sub-folder per class (names matching the model's labels), or ImageNet-style
  files named ``<wnid>_<anything>.JPEG`` with ``class_index`` (one wnid per line, the line
  number is the label). Files that are not readable images are skipped and counted.
* a ``.npy`` file: an array of ready inputs, N x C x H x W float32 (calibration only).
* ``random``: Gaussian noise. Calibrating on noise mis-sizes every activation range, so it is
  used only when asked for by name, with a warning.

Calibration takes the first ``calib_count`` images of a seeded shuffle, evaluation the rest:
the two never overlap.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
DIGITS_TRAIN = 1297  # of 1797; the remaining 500 are held out for evaluation
SEED = 0


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, center-crop, scale to [0, 1], normalise, CHW float32."""
    resize: int
    crop: int
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    @classmethod
    def from_dict(cls, d: dict, input_size: int) -> Preprocess:
        d = {k: v for k, v in (d or {}).items() if k not in ("scale", "layout", "channel_order")}
        d.setdefault("resize", input_size)
        d.setdefault("crop", input_size)
        if d["crop"] != input_size:  # the model runs at another resolution: keep the crop ratio
            d["resize"] = round(d["resize"] * input_size / d["crop"])
            d["crop"] = input_size
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)

    def to_dict(self) -> dict:
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean),
                "std": list(self.std), "interpolation": self.interpolation,
                "scale": "pixel / 255", "layout": "NCHW", "channel_order": "RGB"}

    def resized(self, img):
        """PIL image -> RGB, shorter side ``resize``, center crop ``crop`` x ``crop``."""
        from PIL import Image
        img = img.convert("RGB")
        w, h = img.size
        s = self.resize / min(w, h)
        nw, nh = max(self.crop, round(w * s)), max(self.crop, round(h * s))
        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                    "nearest": Image.NEAREST}[self.interpolation]
        img = img.resize((nw, nh), resample)
        left, top = (nw - self.crop) // 2, (nh - self.crop) // 2
        return img.crop((left, top, left + self.crop, top + self.crop))

    def normalise(self, rgb_hwc_uint8: np.ndarray) -> np.ndarray:
        x = rgb_hwc_uint8.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, img) -> np.ndarray:
        return self.normalise(np.asarray(self.resized(img)))


@dataclass
class Dataset:
    x: np.ndarray                       # N x C x H x W float32, preprocessed
    y: np.ndarray | None                # N int64 labels, or None
    source: str
    split: str
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x)

    def describe(self) -> dict:
        return {"source": self.source, "split": self.split, "count": len(self),
                "skipped": len(self.skipped), "labelled": self.y is not None}


def _split(n: int, split: str, calib_count: int) -> np.ndarray:
    order = np.random.default_rng(SEED).permutation(n)
    if split == "calib":
        return np.sort(order[:calib_count])
    if split == "eval":
        return np.sort(order[calib_count:])
    if split == "all":
        return np.arange(n)
    raise ValueError(f"split={split!r}: must be calib, eval or all")


def _digits(pre: Preprocess, split: str, calib_count: int, limit: int | None) -> Dataset:
    from PIL import Image
    from sklearn.datasets import load_digits
    d = load_digits()
    images, labels = d.images, d.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(images))
    train, test = order[:DIGITS_TRAIN], order[DIGITS_TRAIN:]
    idx = {"train": train, "calib": train[:calib_count], "eval": test, "all": order}.get(split)
    if idx is None:
        raise ValueError(f"split={split!r}: digits has train, calib, eval and all")
    idx = np.sort(idx)[:limit]
    xs = [pre(Image.fromarray((images[i] * (255 / 16)).astype(np.uint8), "L")) for i in idx]
    return Dataset(np.stack(xs), labels[idx], "digits", split)


def _read_class_index(path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"class-index file {path} does not exist")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _folder(root: Path, pre: Preprocess, split: str, calib_count: int, limit: int | None,
            labels: list[str] | None, class_index: Path | None) -> Dataset:
    from PIL import Image, UnidentifiedImageError
    every = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    files = [p for p in every if p.suffix.lower() in IMAGE_SUFFIXES]
    not_images = [str(p) for p in every if p.suffix.lower() not in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"data folder {root} holds no image files; expected one sub-folder of images "
                         "per class, or ImageNet-style <wnid>_*.JPEG files with --class-index")
    subdirs = sorted({p.parent for p in files} - {root})
    if class_index is not None:
        index = {name: i for i, name in enumerate(_read_class_index(class_index))}
        key = (lambda p: p.parent.name) if subdirs else (lambda p: p.name.split("_")[0].split(".")[0])
        unknown = sorted({key(p) for p in files if key(p) not in index})
        if unknown:
            raise ValueError(f"{len(unknown)} class name(s) in {root} are not in the class index "
                             f"{class_index}: {', '.join(unknown[:5])}; name files <wnid>_*.JPEG or "
                             "folders <wnid>/ with wnids listed in the class-index file")
        label_of = lambda p: index[key(p)]  # noqa: E731
    elif subdirs:
        names = [d.name for d in subdirs]
        lookup = {str(n).lower(): i for i, n in enumerate(labels or [])}
        if all(n.lower() in lookup for n in names):
            label_of = lambda p: lookup[p.parent.name.lower()]  # noqa: E731
        elif all(n.isdigit() and labels and int(n) < len(labels) for n in names):
            label_of = lambda p: int(p.parent.name)  # noqa: E731
        else:
            bad = [n for n in names if n.lower() not in lookup][:5]
            raise ValueError(f"the class folders of {root} do not match the model's labels "
                             f"(e.g. {', '.join(bad)}; the model has {len(labels or [])} labels such as "
                             f"{', '.join(map(str, (labels or [])[:3]))}); name the folders after the "
                             "labels or by class number, or pass --class-index")
    else:
        label_of = None
    files = [files[i] for i in _split(len(files), split, calib_count)][:limit]
    xs, ys, kept, skipped = [], [], [], not_images
    for p in files:
        try:
            with Image.open(p) as img:
                xs.append(pre(img))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            skipped.append(str(p))
            continue
        kept.append(str(p))
        if label_of is not None:
            ys.append(label_of(p))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} file(s) in {root} that are not readable images "
                      f"(e.g. {Path(skipped[0]).name})", stacklevel=3)
    if not xs:
        raise ValueError(f"no readable images for the {split} split in {root} "
                         f"({len(skipped)} file(s) skipped)")
    y = np.asarray(ys, np.int64) if label_of is not None else None
    return Dataset(np.stack(xs), y, str(root), split, kept, skipped)


def load_data(source: str | Path, *, input_shape: tuple[int, int, int], preprocess: dict | None = None,
              split: str = "calib", calib_count: int = 64, limit: int | None = None,
              labels: list[str] | None = None, class_index: str | Path | None = None) -> Dataset:
    """Load ``source`` (see the module docstring) as model inputs of ``input_shape`` (C, H, W)."""
    c, h, w = input_shape
    if h != w:
        raise ValueError(f"input {h}x{w}: only square inputs are supported")
    pre = Preprocess.from_dict(preprocess or {}, h)
    source_s = str(source)
    if source_s == "digits":
        ds = _digits(pre, split, calib_count, limit)
    elif source_s == "random":
        warnings.warn("calibrating on random noise: int8 ranges will not fit real images; "
                      "use --calib digits or an image folder", stacklevel=2)
        n = calib_count if split == "calib" else (limit or calib_count)
        x = np.random.default_rng(SEED).standard_normal((n, c, h, w)).astype(np.float32)
        ds = Dataset(x, None, "random", split)
    elif source_s.endswith(".npy"):
        path = Path(source_s)
        if not path.exists():
            raise FileNotFoundError(f"calibration file {path} does not exist")
        x = np.load(path)
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"calibration array {path} has shape {tuple(x.shape)}; the model needs "
                             f"N x {c} x {h} x {w} (NCHW, preprocessed)")
        ds = Dataset(x.astype(np.float32)[:limit], None, str(path), split)
    else:
        root = Path(source_s)
        if not root.is_dir():
            raise ValueError(f"data source {source_s!r}: not 'digits', 'random', a .npy file or an "
                             "existing folder")
        ds = _folder(root, pre, split, calib_count, limit, labels,
                     Path(class_index) if class_index else None)
    if len(ds) == 0:
        raise ValueError(f"data source {source_s!r} gave no samples for the {split} split")
    if ds.x.shape[1] != c:
        if ds.x.shape[1] == 3 and c == 1:
            ds.x = ds.x.mean(axis=1, keepdims=True)
        else:
            raise ValueError(f"data source {source_s!r} gives {ds.x.shape[1]} channels; the model takes {c}")
    return ds
