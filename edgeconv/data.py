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

Calibration takes the first ``calib_count`` images of a seeded shuffle
(``edgeconv.artifact.split_indices``). Evaluation (``heldout``) leaves out every file whose
content calibrated the artifact, recognised by digest (``Dataset.describe`` records them), so
the two never overlap wherever the folders lie or however they are named.

Images are read as 8-bit RGB: 16-bit greyscale (``I;16``, 32-bit ``I`` holding 16-bit values) is
scaled to 8 bits, palette, alpha, CMYK and 1-bit images are converted by Pillow; modes with no
defined range (float ``F``, ``I`` beyond 16 bits) are skipped with a warning that counts them.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifact import SEED, file_digest, split_indices

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
DIGITS_TRAIN = 1297  # of 1797; the remaining 500 are held out for evaluation


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, center-crop, scale to [0, 1], normalise, CHW float32."""
    resize: int
    crop: int
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    def __post_init__(self):
        from .spec import MAX_INPUT_SIZE
        for key in ("resize", "crop"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 4 * MAX_INPUT_SIZE:
                raise ValueError(f"{key}={v!r}: must be a whole number of pixels from 1 to {4 * MAX_INPUT_SIZE}")
        for key in ("mean", "std"):
            v = getattr(self, key)
            if len(v) != 3 or not all(math.isfinite(x) for x in v):
                raise ValueError(f"{key}={list(v)}: three finite numbers, one per RGB channel")
        if not all(x > 0 for x in self.std):
            raise ValueError(f"std={list(self.std)}: every value must be > 0")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r}: one of {', '.join(INTERPOLATIONS)}")

    @classmethod
    def from_dict(cls, d: dict, input_size: int) -> Preprocess:
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"preprocess must be a table (resize, crop, mean, std, interpolation), not {d!r}")
        d = {k: v for k, v in (d or {}).items() if k not in ("scale", "layout", "channel_order")}
        unknown = sorted(set(d) - {"resize", "crop", "mean", "std", "interpolation"})
        if unknown:
            raise ValueError(f"unknown preprocess key {unknown[0]!r}; known: resize, crop, mean, std, interpolation")
        d.setdefault("resize", input_size)
        d.setdefault("crop", input_size)
        if d["crop"] != input_size and all(isinstance(d[k], (int, float)) and d[k] > 0 for k in ("resize", "crop")):
            # the model runs at another resolution: keep the crop ratio
            d["resize"] = round(d["resize"] * input_size / d["crop"])
            d["crop"] = input_size
        for k in ("mean", "std"):
            if k in d:
                if not isinstance(d[k], (list, tuple)) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in d[k]):
                    raise ValueError(f"{k}={d[k]!r}: three numbers, one per RGB channel")
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)

    def to_dict(self) -> dict:
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean),
                "std": list(self.std), "interpolation": self.interpolation,
                "scale": "pixel / 255", "layout": "NCHW", "channel_order": "RGB"}

    def resized(self, img):
        """PIL image -> RGB, shorter side ``resize``, center crop ``crop`` x ``crop``."""
        from PIL import Image
        img = to_rgb(img)
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


class ImageModeError(ValueError):
    """An image whose pixel values have no defined 8-bit meaning."""


def to_rgb(img):
    """A PIL image as 8-bit RGB. Pillow's own ``convert("RGB")`` clips 16-bit greyscale to 255
    (nearly white), so those are scaled by their bit depth first."""
    from PIL import Image
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ImageModeError(f"mode {img.mode} with values outside 0..65535")
        if img.mode == "I" and a.size and a.max() <= 255:
            return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        raise ImageModeError("mode F (floating-point pixels, no defined range)")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


@dataclass
class Dataset:
    x: np.ndarray                       # N x C x H x W float32, preprocessed
    y: np.ndarray | None                # N int64 labels, or None
    source: str
    split: str
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)   # content digest of each file kept
    left_out: int = 0                                   # files left out because they calibrated
    class_index: str | None = None
    disjoint: bool | None = None                        # heldout(): known to share no calibration sample

    def __len__(self) -> int:
        return len(self.x)

    def describe(self) -> dict:
        """Where the samples came from, for the manifest: the resolved source, and for a folder the
        digest of every file, so evaluation can leave exactly these out."""
        d = {"source": self.source, "split": self.split, "count": len(self), "skipped": len(self.skipped),
             "labelled": self.y is not None, "class_index": self.class_index}
        if self.digests:
            d["digests"] = self.digests
        return d


def _digits(pre: Preprocess, split: str, calib_count: int, limit: int | None) -> Dataset:
    """Digits: the first DIGITS_TRAIN of the seeded shuffle train (calibration takes the first
    ``calib_count`` of those), the other 500 are held out for evaluation."""
    from PIL import Image
    from sklearn.datasets import load_digits
    d = load_digits()
    images, labels = d.images, d.target.astype(np.int64)
    n = len(images)
    idx = {"train": lambda: split_indices(n, "calib", DIGITS_TRAIN),
           "calib": lambda: split_indices(n, "calib", min(calib_count, DIGITS_TRAIN)),
           "eval": lambda: split_indices(n, "eval", DIGITS_TRAIN),
           "all": lambda: split_indices(n, "all", 0)}.get(split)
    if idx is None:
        raise ValueError(f"split={split!r}: digits has train, calib, eval and all")
    idx = np.asarray(idx()[:limit], dtype=np.int64)
    xs = [pre(Image.fromarray((images[i] * (255 / 16)).astype(np.uint8), "L")) for i in idx]
    return Dataset(np.stack(xs), labels[idx], "digits", split)


def read_class_index(path: Path) -> list[str]:
    """wnids one per line (extra words after the first are ignored); line number = label. A wnid
    listed twice would give two labels one name: an error naming both lines."""
    if not path.exists():
        raise FileNotFoundError(f"class-index file {path} does not exist")
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError) as e:
        raise ValueError(f"class-index file {path} is not a text file ({type(e).__name__})") from None
    names, seen = [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name = line.split()[0]
        if name in seen:
            raise ValueError(f"class-index file {path}: line {lineno} repeats {name!r} (first on line "
                             f"{seen[name]}); each class once, one per line")
        seen[name] = lineno
        names.append(name)
    if not names:
        raise ValueError(f"class-index file {path} is empty; one wnid per line")
    return names


def image_files(root: Path) -> tuple[list[Path], list[str]]:
    """The image files under ``root`` (sorted) and the other files there, by suffix."""
    every = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    files = [p for p in every if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"data folder {root} holds no image files; expected one sub-folder of images "
                         "per class, or ImageNet-style <wnid>_*.JPEG files with --class-index")
    return files, [str(p) for p in every if p.suffix.lower() not in IMAGE_SUFFIXES]


def folder_labels(root: Path, files: list[Path], labels: list[str] | None, class_index: Path | None):
    """How a file of the folder ``root`` gets its label: by its class sub-folder (named like one of
    ``labels``, or a class number) or by the wnid of its name or folder in ``class_index``; None
    for a flat folder without a class index. A mismatch is an error naming examples."""
    subdirs = sorted({p.parent for p in files} - {root})
    if class_index is not None:
        index = {name: i for i, name in enumerate(read_class_index(class_index))}
        key = (lambda p: p.parent.name) if subdirs else (lambda p: p.name.split("_")[0].split(".")[0])
        unknown = sorted({key(p) for p in files if key(p) not in index})
        if unknown:
            raise ValueError(f"{len(unknown)} class name(s) in {root} are not in the class index "
                             f"{class_index}: {', '.join(unknown[:5])}; name files <wnid>_*.JPEG or "
                             "folders <wnid>/ with wnids listed in the class-index file")
        if labels and len(index) > len(labels):
            raise ValueError(f"class-index file {class_index} lists {len(index)} classes but the model has "
                             f"{len(labels)} labels; one line per class of the model")
        return lambda p: index[key(p)]
    if not subdirs:
        return None
    names = [d.name for d in subdirs]
    lookup = {str(n).lower(): i for i, n in enumerate(labels or [])}
    if all(n.lower() in lookup for n in names):
        return lambda p: lookup[p.parent.name.lower()]
    if all(n.isdigit() and labels and int(n) < len(labels) for n in names):
        return lambda p: int(p.parent.name)
    bad = [n for n in names if n.lower() not in lookup][:5]
    raise ValueError(f"the class folders of {root} do not match the model's labels "
                     f"(e.g. {', '.join(bad)}; the model has {len(labels or [])} labels such as "
                     f"{', '.join(map(str, (labels or [])[:3]))}); name the folders after the "
                     "labels or by class number, or pass --class-index")


def _folder(root: Path, pre: Preprocess, split: str, calib_count: int, limit: int | None,
            labels: list[str] | None, class_index: Path | None, exclude=frozenset(), labelled: bool = True) -> Dataset:
    from PIL import Image, UnidentifiedImageError
    files, not_images = image_files(root)
    label_of = folder_labels(root, files, labels, class_index) if labelled or class_index else None
    files = [files[i] for i in split_indices(len(files), split, calib_count)]
    xs, ys, kept, digests, unreadable, odd_modes, left_out = [], [], [], [], list(not_images), [], 0
    for p in files:
        if limit is not None and len(xs) >= limit:
            break
        digest = file_digest(p)
        if digest in exclude:
            left_out += 1
            continue
        try:
            with Image.open(p) as img:
                xs.append(pre(img))
        except ImageModeError as e:
            odd_modes.append((str(p), str(e)))
            continue
        except Image.DecompressionBombError as e:
            odd_modes.append((str(p), str(e).split(" could be")[0]))
            continue
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            unreadable.append(str(p))
            continue
        kept.append(str(p))
        digests.append(digest)
        if label_of is not None:
            ys.append(label_of(p))
    if unreadable:
        warnings.warn(f"skipped {len(unreadable)} file(s) in {root} that are not readable images "
                      f"(e.g. {Path(unreadable[0]).name})", stacklevel=3)
    if odd_modes:
        warnings.warn(f"skipped {len(odd_modes)} image(s) in {root} whose pixels have no 8-bit RGB meaning "
                      f"(e.g. {Path(odd_modes[0][0]).name}: {odd_modes[0][1]}); convert them to 8- or 16-bit "
                      "RGB or greyscale", stacklevel=3)
    skipped = unreadable + [p for p, _ in odd_modes]
    if not xs:
        why = f"{len(skipped)} file(s) skipped" + (f", {left_out} left out because they calibrated the artifact"
                                                   if left_out else "")
        raise ValueError(f"no readable images for the {split} split in {root} ({why})")
    y = np.asarray(ys, np.int64) if label_of is not None else None
    return Dataset(np.stack(xs), y, str(root.resolve()), split, kept, skipped, digests, left_out,
                   str(class_index.resolve()) if class_index else None)


def load_data(source: str | Path, *, input_shape: tuple[int, int, int], preprocess: dict | None = None,
              split: str = "calib", calib_count: int = 64, limit: int | None = None,
              labels: list[str] | None = None, class_index: str | Path | None = None,
              exclude=frozenset(), labelled: bool = True) -> Dataset:
    """Load ``source`` (see the module docstring) as model inputs of ``input_shape`` (C, H, W);
    files whose digest is in ``exclude`` are left out (counted in ``left_out``). With
    ``labelled=False`` (calibration) a folder's class names are not matched to ``labels``."""
    c, h, w = input_shape
    if h != w:
        raise ValueError(f"input {h}x{w}: only square inputs are supported")
    pre = Preprocess.from_dict(preprocess or {}, h)
    source_s = str(source)
    if class_index is not None and not Path(source_s).is_dir():
        raise ValueError(f"--class-index {class_index} labels the images of a folder; the data source "
                         f"{source_s!r} is not one (drop --class-index or pass an image folder)")
    if source_s == "digits":
        ds = _digits(pre, split, calib_count, limit)
    elif source_s == "random":
        if split == "calib":
            warnings.warn("calibrating on random noise: int8 ranges will not fit real images; "
                          "use --calib digits or an image folder", stacklevel=2)
        n = calib_count if split == "calib" else (limit or calib_count)
        x = np.random.default_rng(SEED).standard_normal((n, c, h, w)).astype(np.float32)
        ds = Dataset(x, None, "random", split)
    elif source_s.endswith(".npy"):
        path = Path(source_s)
        if not path.exists():
            raise FileNotFoundError(f"calibration file {path} does not exist")
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"calibration file {path} is not a readable .npy array ({e})") from None
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"calibration array {path} has shape {tuple(x.shape)}; the model needs "
                             f"N x {c} x {h} x {w} (NCHW, preprocessed)")
        if not np.isfinite(x).all():
            raise ValueError(f"calibration array {path} holds NaN or infinite values")
        ds = Dataset(x.astype(np.float32)[:limit], None, str(path.resolve()), split, digests=[file_digest(path)])
    else:
        root = Path(source_s)
        if not root.is_dir():
            raise ValueError(f"data source {source_s!r}: not 'digits', 'random', a .npy file or an "
                             "existing folder")
        ds = _folder(root, pre, split, calib_count, limit, labels,
                     Path(class_index) if class_index else None, exclude, labelled)
    if len(ds) == 0:
        raise ValueError(f"data source {source_s!r} gave no samples for the {split} split")
    if ds.x.shape[1] != c:
        if ds.x.shape[1] == 3 and c == 1:
            ds.x = ds.x.mean(axis=1, keepdims=True)
        else:
            raise ValueError(f"data source {source_s!r} gives {ds.x.shape[1]} channels; the model takes {c}")
    return ds


def heldout(source: str, *, input_shape, preprocess: dict | None, calibration: dict | None,
            labels=None, class_index=None, limit: int | None = None, labelled: bool = True) -> Dataset:
    """Samples of ``source`` that never calibrated the artifact whose manifest recorded
    ``calibration``: the 500 held-out digits, or every image of a folder whose content digest is
    not among the calibration files'. The one rule ``check`` and ``verify`` both use."""
    calibration = calibration or {}
    if str(source) == "digits":
        ds = load_data("digits", input_shape=input_shape, preprocess=preprocess, split="eval", limit=limit)
        ds.disjoint = True  # the fixed split: calibration draws from the training digits only
        return ds
    same_folder = calibration.get("source") and Path(str(source)).resolve() == Path(calibration["source"])
    class_index = class_index or (calibration.get("class_index") if same_folder else None)
    ds = load_data(source, input_shape=input_shape, preprocess=preprocess, split="all", limit=limit,
                   labels=labels, class_index=class_index, exclude=frozenset(calibration.get("digests") or ()),
                   labelled=labelled)
    cal_source = str(calibration.get("source") or "")
    # Files are told apart by content only where the manifest fingerprints the calibration images
    # (not a .npy of ready inputs, nor an array given through the API); digits and noise cannot be
    # among a folder's images.
    ds.disjoint = cal_source in ("digits", "random") or (
        bool(calibration.get("digests")) and not cal_source.endswith(".npy"))
    return ds


def calibration(source: str, model, count: int, class_index=None) -> Dataset:
    """``count`` calibration samples of ``source`` for ``model``, in its preprocessing. Calibration
    needs no labels: a folder's class sub-folders are read whatever they are named."""
    card = model.card
    return load_data(source, input_shape=model.input_shape, preprocess=card.preprocess, split="calib",
                     calib_count=count, labels=list(card.labels or []) or None, class_index=class_index,
                     labelled=False)
