"""MedMNIST v2/+ (Yang et al. 2023): 2D biomedical images as official ``.npz`` files.

Each file (``<flag>.npz`` at 28×28, ``<flag>_<size>.npz`` at 64/128/224) holds
``{train,val,test}_images`` uint8 (N, H, W) grey or (N, H, W, 3) RGB and
``{train,val,test}_labels`` (N, 1). URLs and md5s are those of MedMNIST's ``info.py``
(v3.0.2, zenodo record 10519652); ``npz`` files are read without pickle.

Sources:

- ``medmnist_<flag>`` (e.g. ``medmnist_pathmnist``): one single-label 2D dataset, the
  official train and test splits (option ``val``: ``drop`` the validation split, default,
  or add it to ``train``), options ``size`` (28/64/128/224) and ``channels`` (native,
  1 or 3). ChestMNIST is multi-label and the 3D datasets are volumes: not offered.
- ``medmnist_composite``: a BrainCL-style 40-class composite (see :class:`MedMNISTComposite`).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from pydantic import Field, field_validator

from clsuite.data.download import RemoteFile, download_all, verify
from clsuite.data.sources import ConfigurableSource, LabeledImages, SourceOptions, register_instance
from clsuite.data.sources.images import to_channels
from clsuite.core.errors import DataError

ZENODO = "https://zenodo.org/records/10519652/files/"
FIX = "delete it and rerun `clsuite fetch`"


class Info(NamedTuple):
    channels: int
    licence: str
    labels: list[str]
    md5: dict[int, str]


# From MedMNIST's medmnist/info.py (v3.0.2): channels, licence, label names, MD5 per size.
INFO: dict[str, Info] = {
    'pathmnist': Info(3, 'CC BY 4.0', ['adipose', 'background', 'debris', 'lymphocytes', 'mucus', 'smooth muscle', 'normal colon mucosa', 'cancer-associated stroma', 'colorectal adenocarcinoma epithelium'], {28: 'a8b06965200029087d5bd730944a56c1', 64: '55aa9c1e0525abe5a6b9d8343a507616', 128: 'ac42d08fb904d92c244187169d1fd1d9', 224: '2c51a510bcdc9cf8ddb2af93af1eadec'}),
    'dermamnist': Info(3, 'CC BY-NC 4.0', ['actinic keratoses and intraepithelial carcinoma', 'basal cell carcinoma', 'benign keratosis-like lesions', 'dermatofibroma', 'melanoma', 'melanocytic nevi', 'vascular lesions'], {28: '0744692d530f8e62ec473284d019b0c7', 64: 'b70a2f5635c6199aeaa28c31d7202e1f', 128: '2defd784463fa5243564e855ed717de1', 224: '8974907d8e169bef5f5b96bc506ae45d'}),
    'octmnist': Info(1, 'CC BY 4.0', ['choroidal neovascularization', 'diabetic macular edema', 'drusen', 'normal'], {28: 'c68d92d5b585d8d81f7112f81e2d0842', 64: 'e229e9440236b774d9f0dfef9d07bdaf', 128: '0a97e76651ace45c5d943ee3f65b63ae', 224: 'abc493b6d529d5de7569faaef2773ba3'}),
    'pneumoniamnist': Info(1, 'CC BY 4.0', ['normal', 'pneumonia'], {28: '28209eda62fecd6e6a2d98b1501bb15f', 64: '8f4eceb4ccffa70c672198ea285246c6', 128: '05b46931834c231683c68f40c47b2971', 224: 'd6a3c71de1b945ea11211b03746c1fe1'}),
    'retinamnist': Info(3, 'CC BY 4.0', ['0', '1', '2', '3', '4'], {28: 'bd4c0672f1bba3e3a89f0e4e876791e4', 64: 'afda852cc34dcda56f86ad2b2457dbcc', 128: 'e48e916a24454daf90583d4e6efb1a18', 224: 'eae7e3b6f3fcbda4ae613ebdcbe35348'}),
    'breastmnist': Info(1, 'CC BY 4.0', ['malignant', 'normal, benign'], {28: '750601b1f35ba3300ea97c75c52ff8f6', 64: '742edef2a1fd1524b2efff4bd7ba9364', 128: '363e4b3f8d712e9b5de15470a2aaadf1', 224: 'b56378a6eefa9fed602bb16d192d4c8b'}),
    'bloodmnist': Info(3, 'CC BY 4.0', ['basophil', 'eosinophil', 'erythroblast', 'immature granulocytes(myelocytes, metamyelocytes and promyelocytes)', 'lymphocyte', 'monocyte', 'neutrophil', 'platelet'], {28: '7053d0359d879ad8a5505303e11de1dc', 64: '2b94928a2ae4916078ca51e05b6b800b', 128: 'adace1e0ed228fccda1f39692059dd4c', 224: 'b718ff6835fcbdb22ba9eacccd7b2601'}),
    'tissuemnist': Info(1, 'CC BY 4.0', ['Collecting Duct, Connecting Tubule', 'Distal Convoluted Tubule', 'Glomerular endothelial cells', 'Interstitial endothelial cells', 'Leukocytes', 'Podocytes', 'Proximal Tubule Segments', 'Thick Ascending Limb'], {28: 'ebe78ee8b05294063de985d821c1c34b', 64: '123ece2eba09d0aa5d698fda57103344', 128: '61b955355d7425a89687b06cca3ce0c2', 224: 'b077128c4a949f0a4eb01517f9037b9c'}),
    'organamnist': Info(1, 'CC BY 4.0', ['bladder', 'femur-left', 'femur-right', 'heart', 'kidney-left', 'kidney-right', 'liver', 'lung-left', 'lung-right', 'pancreas', 'spleen'], {28: '68e3f8846a6bd62f0c9bf841c0d9eacc', 64: '2dcccc29b88e6da5a01161ef20cda288', 128: 'eeae80d0a227a8d099027e1b3cfd3b60', 224: '50747347e05c87dd3aaf92c49f9f3170'}),
    'organcmnist': Info(1, 'CC BY 4.0', ['bladder', 'femur-left', 'femur-right', 'heart', 'kidney-left', 'kidney-right', 'liver', 'lung-left', 'lung-right', 'pancreas', 'spleen'], {28: 'b9ceb9546e10131b32923c5bbeaea2b1', 64: '3ce34a8724ea6f548e6db4744d03b6a9', 128: '773c1f009daa3fe5d9a2a201b2a7ed94', 224: '050f5e875dc056f6768abf94ec9995d1'}),
    'organsmnist': Info(1, 'CC BY 4.0', ['bladder', 'femur-left', 'femur-right', 'heart', 'kidney-left', 'kidney-right', 'liver', 'lung-left', 'lung-right', 'pancreas', 'spleen'], {28: '9ab87b696fb54e2a387ebe992d6ed5f1', 64: '53a6d115339d874c25e309a994ff46d3', 128: 'ded0c5fa01a95dc4978b956f613e9b8e', 224: 'b354719e553fbbb2513d5533f52a4cb1'}),
}
# BrainCL-style composite: 7 datasets, 9 + 7 + 4 + 2 + 8 + 8 + 2 = 40 classes (our choice,
# see MedMNISTComposite).
COMPOSITE = ("pathmnist", "dermamnist", "octmnist", "pneumoniamnist", "bloodmnist", "tissuemnist", "breastmnist")


def remote(flag: str, size: int) -> RemoteFile:
    """The published file of ``flag`` at ``size`` (URL and md5 from INFO)."""
    stem = flag if size == 28 else f"{flag}_{size}"
    return RemoteFile(f"{stem}.npz", (f"{ZENODO}{stem}.npz?download=1",), md5=INFO[flag].md5[size])


def read_npz(path: Path, size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train"|"val"|"test": (images uint8 (N, C, size, size), labels int64 (N,))}``."""
    out = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for part in ("train", "val", "test"):
                if f"{part}_images" not in npz.files or f"{part}_labels" not in npz.files:
                    raise DataError(f"{path}: no {part}_images/{part}_labels arrays; {FIX}")
                x, y = npz[f"{part}_images"], npz[f"{part}_labels"]
                if x.dtype != np.uint8 or x.ndim not in (3, 4) or x.shape[1:3] != (size, size):
                    raise DataError(f"{path}: {part}_images is {x.dtype} {x.shape}, expected uint8 (N, {size}, {size}[, 3]); {FIX}")
                if y.ndim != 2 or y.shape != (len(x), 1):
                    raise DataError(f"{path}: {part}_labels has shape {y.shape}, expected ({len(x)}, 1) (single label); {FIX}")
                x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
                out[part] = (np.ascontiguousarray(x), y[:, 0].astype(np.int64))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a complete npz file ({exc}); {FIX}") from None
    return out


class _SizeOption(SourceOptions):
    size: Literal[28, 64, 128, 224] = 28


class MedMNIST(ConfigurableSource):
    """One MedMNIST 2D dataset with its official split (options: size, val, channels)."""

    class Options(_SizeOption):
        flag: str
        val: Literal["drop", "train"] = "drop"
        channels: Literal["native", 1, 3] = "native"

        @field_validator("flag")
        @classmethod
        def _flag(cls, v: str) -> str:
            if v not in INFO:
                raise ValueError(f"unknown MedMNIST 2D dataset {v!r}; choose one of {', '.join(INFO)}")
            return v

    citation = "yang2023medmnist"
    raw_name = "medmnist"

    def files(self) -> list[RemoteFile]:
        return [remote(self.opts.flag, self.opts.size)]

    def fetch(self, raw_dir: Path) -> list[Path]:
        return download_all(self.files(), raw_dir)

    def load(self, raw_dir: Path) -> LabeledImages:
        (rf,) = self.files()
        path = raw_dir / rf.filename
        verify(path, rf)
        info = INFO[self.opts.flag]
        parts = read_npz(path, self.opts.size)
        order = [("train", "train"), ("test", "test")] + ([("val", "train")] if self.opts.val == "train" else [])
        xs, ys, split, origin = [], [], [], []
        for part, as_split in order:
            x, y = parts[part]
            if len(y) and (y.min() < 0 or y.max() >= len(info.labels)):
                raise DataError(f"{path}: {part} label {y.max()} outside 0..{len(info.labels) - 1}; {FIX}")
            xs.append(x)
            ys.append(y)
            split.append(np.full(len(y), as_split))
            origin.append(np.full(len(y), part))
        images = np.concatenate(xs)
        if self.opts.channels != "native":
            images = to_channels(images, int(self.opts.channels), str(path))
        return LabeledImages(images, np.concatenate(ys), list(info.labels), split=np.concatenate(split),
                             meta={"medmnist_split": np.concatenate(origin)})


class MedMNISTComposite(ConfigurableSource):
    """A BrainCL-style class-incremental MedMNIST composite: several 2D datasets as one label space.

    BrainCL (Liu et al. 2025, arXiv 2504.14727) reports a 40-class MedMNIST composite; its
    dataset list could not be found, so the default here is our choice of the 7 single-label
    2D datasets with distinct modalities that sum to 40 classes: PathMNIST 9, DermaMNIST 7,
    OCTMNIST 4, PneumoniaMNIST 2, BloodMNIST 8, TissueMNIST 8, BreastMNIST 2 (option
    ``datasets``; the three Organ{A,C,S}MNIST views share CT volumes, RetinaMNIST is ordinal).

    Per class at most ``train_per_class`` (1000) images are drawn from the official train
    split and at most ``test_per_class`` (50) from the official test split, without
    replacement, by ``np.random.default_rng(seed)`` in dataset then class order (classes
    with fewer images keep all: e.g. DermaMNIST's dermatofibroma has fewer than 50 test
    images). Grey images are repeated to 3 channels. Labels are consecutive in dataset
    order; class names are ``<flag>:<label name>``; ``meta["dataset"]`` names each row's dataset.
    """

    class Options(_SizeOption):
        datasets: tuple[str, ...] = COMPOSITE
        train_per_class: int = Field(1000, ge=1)
        test_per_class: int = Field(50, ge=1)
        seed: int = 0

        @field_validator("datasets")
        @classmethod
        def _datasets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
            unknown = [d for d in v if d not in INFO]
            if unknown or not v or len(set(v)) != len(v):
                raise ValueError(f"datasets must be distinct MedMNIST 2D flags from {', '.join(INFO)}; got {list(v)}")
            return v

    citation = "yang2023medmnist,liu2025braincl"
    raw_name = "medmnist"

    def files(self) -> list[RemoteFile]:
        return [remote(flag, self.opts.size) for flag in self.opts.datasets]

    def fetch(self, raw_dir: Path) -> list[Path]:
        return download_all(self.files(), raw_dir)

    def load(self, raw_dir: Path) -> LabeledImages:
        rng = np.random.default_rng(self.opts.seed)
        caps = {"train": self.opts.train_per_class, "test": self.opts.test_per_class}
        xs, ys, split, dataset, names = [], [], [], [], []
        for flag, rf in zip(self.opts.datasets, self.files()):
            path = raw_dir / rf.filename
            verify(path, rf)
            parts = read_npz(path, self.opts.size)
            info = INFO[flag]
            for c, label_name in enumerate(info.labels):
                for part in ("train", "test"):
                    x, y = parts[part]
                    rows = np.flatnonzero(y == c)
                    take = np.sort(rng.choice(rows, size=min(caps[part], len(rows)), replace=False))
                    xs.append(to_channels(x[take], 3, str(path)))
                    ys.append(np.full(len(take), len(names), dtype=np.int64))
                    split.append(np.full(len(take), part))
                    dataset.append(np.full(len(take), flag))
                names.append(f"{flag}:{label_name}")
        return LabeledImages(np.concatenate(xs), np.concatenate(ys), names, split=np.concatenate(split),
                             meta={"dataset": np.concatenate(dataset)})


for _flag in INFO:
    register_instance(MedMNIST(f"medmnist_{_flag}", flag=_flag,
                               description=f"MedMNIST {_flag}, official train/test split, 28x28 ({INFO[_flag].licence})"))
register_instance(MedMNISTComposite(
    "medmnist_composite",
    description="MedMNIST 40-class composite (7 datasets, <=1000 train / <=50 test per class), 3x28x28",
))
