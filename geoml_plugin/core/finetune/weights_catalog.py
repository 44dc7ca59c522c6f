"""The catalogue of pretrained weights GeoML can download: data only, one row per file.

Every fact in a row was copied from the publisher's own source, named in the
row's ``source``:

* torchvision's ImageNet ResNets and MobileNetV2: ``torchvision/models/resnet.py``
  and ``mobilenetv2.py`` (torchvision 0.29): URL, ``_file_size`` (MB), and the
  ``ImageClassification`` transform
  (``torchvision/transforms/_presets.py``: values scaled to 0–1, then
  mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225) per channel).
* remote-sensing ResNets published with TorchGeo: ``torchgeo/models/resnet.py``
  (URL, bands, transform, paper) and ``docs/api/weights/sentinel2.csv`` /
  ``landsat.csv`` (licence, published accuracies). TorchGeo's files are timm
  ResNets, whose tensor names are torchvision's.
* SeCo's scaling: ServiceNow/seasonal-contrast ``datasets/seco_downloader.py``
  (Sentinel-2 L2A ÷ 10000, rescaled 0–1 → 0–255) and ``datasets/seco_dataset.py``
  (per-band quantiles B4 0–129, B3 2–103, B2 3–88, → 0–255, then ImageNet's
  normalisation); composed here into one per-band affine transform on
  Sentinel-2 L2A digital numbers (the 0–255 clipping is not reproduced).

Checksums: both publishers name their files ``name-<hash>.pth`` where
``<hash>`` is the first hex digits of the file's SHA-256 (torch.hub's
``check_hash`` convention); no full SHA-256 is published, so the prefix is
what is verified. File sizes: torchvision publishes them; TorchGeo does not, so
those sizes are estimates from the architecture (float32 tensors), marked
``size_published=False``; the download shows the server's exact size.

Left out: entries whose input scaling or band order is not stated by the
source (e.g. TorchGeo's Landsat ETM+ ResNet-50 rows, whose metadata name the
wrong architecture), and architectures GeoML has no backbone for.

Scaling: ``scale_mean`` / ``scale_std`` (per band, in the raster's units) give
``(x − mean) / std``, the input the weights were trained on. ``None`` means
GeoML's own per-band standardisation with the raster's statistics (ImageNet
rows: ImageNet's normalisation standardises each channel of 0–1 photographs;
standardising each band with its own statistics is the same operation and
also suits rasters that are not 8-bit).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TV_SOURCE = "torchvision 0.29, torchvision/models/resnet.py ({}) and transforms/_presets.py"
TG_SOURCE = ("TorchGeo, torchgeo/models/resnet.py ({}) and docs/api/weights/{}.csv "
             "(https://torchgeo.readthedocs.io/en/stable/api/weights/{}.html)")
TV_LICENCE = ("BSD-3-Clause (torchvision). torchvision: pre-trained models 'may have their own licenses or terms "
              "and conditions derived from the dataset used for training' (ImageNet).")
MOBILENET_V2_PAPER = ("Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks, "
                      "https://arxiv.org/abs/1801.04381")
RESNET_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition, https://arxiv.org/abs/1512.03385"
SSL4EO_S12_PAPER = ("Wang et al. 2023, SSL4EO-S12: A large-scale multi-modal, multi-temporal dataset for "
                    "self-supervised learning in Earth observation, https://arxiv.org/abs/2211.07044")
SECO_PAPER = ("Mañas et al. 2021, Seasonal Contrast: Unsupervised Pre-Training from Uncurated Remote Sensing Data, "
              "https://arxiv.org/abs/2103.16607")
SSL4EO_L_PAPER = ("Stewart et al. 2023, SSL4EO-L: Datasets and Foundation Models for Landsat Imagery "
                  "(NeurIPS Datasets and Benchmarks), https://arxiv.org/abs/2306.09424")

S2_TOA_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
S2_RGB_BANDS = ("B04", "B03", "B02")
RGB_BANDS = ("R", "G", "B")
TM_TOA_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7")
OLI_TIRS_TOA_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11")
OLI_SR_BANDS = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")

# common names a raster's band description may use for a band (matched case-insensitively)
ALIASES = {
    "RGB": {"R": ("red",), "G": ("green",), "B": ("blue",)},
    "Sentinel-2": {"B02": ("blue",), "B03": ("green",), "B04": ("red",)},
    "Landsat 4-5 TM": {"B1": ("blue",), "B2": ("green",), "B3": ("red",)},
    "Landsat 8-9 OLI/TIRS": {"B2": ("blue",), "B3": ("green",), "B4": ("red",)},
    "Landsat 8-9 OLI": {"SR_B2": ("blue",), "SR_B3": ("green",), "SR_B4": ("red",)},
}

_S2_10K = "Sentinel-2 reflectance as digital numbers (reflectance × 10000) ÷ 10000 (TorchGeo: Normalize(0, 10000))"
_L_255 = ("the 8-bit values of the SSL4EO-L dataset ÷ 255 (TorchGeo: Normalize(0, 255)); the weights expect "
          "Landsat products converted to 8 bits as in SSL4EO-L, a conversion GeoML does not do")
_IMAGENET_TEXT = ("RGB ÷ 255, then ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) per channel "
                  "(torchvision ImageClassification); GeoML standardises each band with the raster's statistics")


def _seco_affine() -> tuple[tuple, tuple]:
    """SeCo's input normalisation as (mean, std) per band (B4, B3, B2) on Sentinel-2 L2A digital numbers.

    seco_downloader: v = DN / 10000 × 255; seco_dataset: q = (v − min) / (max − min) × 255, ToTensor ÷ 255,
    then (q − m) / s with ImageNet's m, s. So (DN − mean) / std with mean = (min + m (max − min)) / k,
    std = s (max − min) / k, k = 255 / 10000.
    """
    k = 255.0 / 10000.0
    lo = (0.0, 2.0, 3.0)  # B4, B3, B2 (seco_dataset QUANTILES min_q)
    hi = (129.0, 103.0, 88.0)  # max_q
    mean = tuple(round((a + m * (b - a)) / k, 4) for a, b, m in zip(lo, hi, IMAGENET_MEAN))
    std = tuple(round(s * (b - a) / k, 4) for a, b, s in zip(lo, hi, IMAGENET_STD))
    return mean, std


@dataclass(frozen=True)
class WeightsEntry:
    name: str  # GeoML's name (WEIGHTS=name)
    arch: str  # GeoML backbone the weights fit
    title: str
    sensor: str  # key of ALIASES
    bands: tuple  # band names in the weights' channel order
    scaling: str  # the input the weights expect, in words
    scale_mean: Optional[tuple]  # per band in raster units, None = GeoML's per-band standardisation
    scale_std: Optional[tuple]
    url: str
    hash_prefix: str  # first hex digits of the file's SHA-256 (from the published file name)
    size_mb: float
    size_published: bool  # False: estimated from the architecture (float32), the source publishes no size
    licence: str
    paper: str
    source: str
    key_layout: str = "torchvision"  # "timm" for TorchGeo's files (same tensor names for ResNets)
    sha256: str = ""  # full SHA-256 where the source publishes one
    published: dict = field(default_factory=dict)  # published accuracies, as given by the source

    @property
    def filename(self) -> str:
        return os.path.basename(self.url)

    def describe(self) -> str:
        size = f"{self.size_mb:.1f} MB" if self.size_published else f"about {self.size_mb:.0f} MB (estimated)"
        return (f"{self.title}\nBands: {', '.join(self.bands)} ({self.sensor})\nInput: {self.scaling}\n"
                f"Size: {size}\nFrom: {self.url}\nLicence: {self.licence}\nPaper: {self.paper}")


def _tv(name, depth, url, size, variant="IMAGENET1K_V1"):
    return WeightsEntry(
        name=name, arch=f"resnet{depth}", title=f"ResNet-{depth}, ImageNet ({variant}, torchvision)", sensor="RGB",
        bands=RGB_BANDS, scaling=_IMAGENET_TEXT, scale_mean=None, scale_std=None, url=url,
        hash_prefix=_prefix(url), size_mb=size, size_published=True, licence=TV_LICENCE, paper=RESNET_PAPER,
        source=TV_SOURCE.format(f"ResNet{depth}_Weights.{variant}"), key_layout="torchvision")


def _tv_mobilenet_v2(name, url, size, variant):
    return WeightsEntry(
        name=name, arch="mobilenet_v2", title=f"MobileNetV2, ImageNet ({variant}, torchvision)", sensor="RGB",
        bands=RGB_BANDS, scaling=_IMAGENET_TEXT, scale_mean=None, scale_std=None, url=url,
        hash_prefix=_prefix(url), size_mb=size, size_published=True, licence=TV_LICENCE, paper=MOBILENET_V2_PAPER,
        source=f"torchvision 0.29, torchvision/models/mobilenetv2.py (MobileNet_V2_Weights.{variant}) and "
               "transforms/_presets.py", key_layout="torchvision")


def _prefix(url: str) -> str:
    m = re.search(r"-([0-9a-f]{8,})\.pth$", url)
    return m.group(1) if m else ""


_EST_MB = {"resnet18": 45.0, "resnet50": 94.0}  # backbone tensors without the classifier, float32


def _tg(name, arch, enum, url, title, sensor, bands, scaling, mean, std, licence, paper, csv, published=None):
    return WeightsEntry(
        name=name, arch=arch, title=title, sensor=sensor, bands=bands, scaling=scaling, scale_mean=mean,
        scale_std=std, url=url, hash_prefix=_prefix(url), size_mb=_EST_MB[arch], size_published=False,
        licence=licence, paper=paper, source=TG_SOURCE.format(enum, csv, csv), key_layout="timm",
        published=published or {})


def _const(value: float, n: int) -> tuple:
    return (float(value),) * n


_SECO_MEAN, _SECO_STD = _seco_affine()
_HF = "https://hf.co/torchgeo/"
_L = _HF + "ssl4eo_landsat/resolve/1c88bb51b6e17a21dde5230738fa38b74bd74f76/"
_SECO_SCALING = ("Sentinel-2 L2A digital numbers as in SeCo: ÷ 10000 → 0–255, per-band quantile stretch "
                 "(B4 0–129, B3 2–103, B2 3–88) → 0–1, then ImageNet mean/std (one affine transform per band)")

CATALOGUE: tuple = (
    _tv("resnet18_imagenet", 18, "https://download.pytorch.org/models/resnet18-f37072fd.pth", 44.661),
    _tv("resnet34_imagenet", 34, "https://download.pytorch.org/models/resnet34-b627a593.pth", 83.275),
    _tv("resnet50_imagenet", 50, "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", 97.79,
        "IMAGENET1K_V2"),
    _tv("resnet50_imagenet_v1", 50, "https://download.pytorch.org/models/resnet50-0676ba61.pth", 97.781),
    _tv_mobilenet_v2("mobilenet_v2_imagenet", "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth", 13.598,
                     "IMAGENET1K_V2"),
    _tv_mobilenet_v2("mobilenet_v2_imagenet_v1", "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
                     13.555, "IMAGENET1K_V1"),
    _tg("resnet18_sentinel2_all_moco", "resnet18", "ResNet18_Weights.SENTINEL2_ALL_MOCO",
        _HF + "resnet18_sentinel2_all_moco/resolve/5b8cddc9a14f3844350b7f40b85bcd32aed75918/"
        "resnet18_sentinel2_all_moco-59bfdff9.pth",
        "ResNet-18, Sentinel-2 all 13 bands, SSL4EO-S12 MoCo", "Sentinel-2", S2_TOA_BANDS, _S2_10K,
        _const(0, 13), _const(10000, 13), "CC-BY-4.0", SSL4EO_S12_PAPER, "sentinel2"),
    _tg("resnet18_sentinel2_rgb_moco", "resnet18", "ResNet18_Weights.SENTINEL2_RGB_MOCO",
        _HF + "resnet18_sentinel2_rgb_moco/resolve/e1c032e7785fd0625224cdb6699aa138bb304eec/"
        "resnet18_sentinel2_rgb_moco-e3a335e3.pth",
        "ResNet-18, Sentinel-2 RGB, SSL4EO-S12 MoCo", "Sentinel-2", S2_RGB_BANDS, _S2_10K,
        _const(0, 3), _const(10000, 3), "CC-BY-4.0", SSL4EO_S12_PAPER, "sentinel2"),
    _tg("resnet18_sentinel2_rgb_seco", "resnet18", "ResNet18_Weights.SENTINEL2_RGB_SECO",
        _HF + "resnet18_sentinel2_rgb_seco/resolve/f8dcee692cf7142163b55a5c197d981fe0e717a0/"
        "resnet18_sentinel2_rgb_seco-cefca942.pth",
        "ResNet-18, Sentinel-2 RGB, SeCo", "Sentinel-2", S2_RGB_BANDS, _SECO_SCALING, _SECO_MEAN, _SECO_STD,
        "Apache-2.0", SECO_PAPER, "sentinel2",
        {"EuroSAT": 93.14, "BigEarthNet": 87.27, "OSCD": 46.94}),
    _tg("resnet50_sentinel2_all_moco", "resnet50", "ResNet50_Weights.SENTINEL2_ALL_MOCO",
        _HF + "resnet50_sentinel2_all_moco/resolve/da4f3c9dbe09272eb902f3b37f46635fa4726879/"
        "resnet50_sentinel2_all_moco-df8b932e.pth",
        "ResNet-50, Sentinel-2 all 13 bands, SSL4EO-S12 MoCo", "Sentinel-2", S2_TOA_BANDS, _S2_10K,
        _const(0, 13), _const(10000, 13), "CC-BY-4.0", SSL4EO_S12_PAPER, "sentinel2",
        {"EuroSAT": 99.1, "BigEarthNet": 91.8, "So2Sat": 60.9}),
    _tg("resnet50_sentinel2_all_dino", "resnet50", "ResNet50_Weights.SENTINEL2_ALL_DINO",
        _HF + "resnet50_sentinel2_all_dino/resolve/d7f14bf5530d70ac69d763e58e77e44dbecfec7c/"
        "resnet50_sentinel2_all_dino-d6c330e9.pth",
        "ResNet-50, Sentinel-2 all 13 bands, SSL4EO-S12 DINO", "Sentinel-2", S2_TOA_BANDS, _S2_10K,
        _const(0, 13), _const(10000, 13), "CC-BY-4.0", SSL4EO_S12_PAPER, "sentinel2",
        {"EuroSAT": 99.1, "BigEarthNet": 90.7, "So2Sat": 63.6}),
    _tg("resnet50_sentinel2_rgb_moco", "resnet50", "ResNet50_Weights.SENTINEL2_RGB_MOCO",
        _HF + "resnet50_sentinel2_rgb_moco/resolve/efd9723b59a88e9dc1420dc1e96afb25b0630a3c/"
        "resnet50_sentinel2_rgb_moco-2b57ba8b.pth",
        "ResNet-50, Sentinel-2 RGB, SSL4EO-S12 MoCo", "Sentinel-2", S2_RGB_BANDS, _S2_10K,
        _const(0, 3), _const(10000, 3), "CC-BY-4.0", SSL4EO_S12_PAPER, "sentinel2"),
    _tg("resnet50_sentinel2_rgb_seco", "resnet50", "ResNet50_Weights.SENTINEL2_RGB_SECO",
        _HF + "resnet50_sentinel2_rgb_seco/resolve/fbd07b02a8edb8fc1035f7957160deed4321c145/"
        "resnet50_sentinel2_rgb_seco-018bf397.pth",
        "ResNet-50, Sentinel-2 RGB, SeCo", "Sentinel-2", S2_RGB_BANDS, _SECO_SCALING, _SECO_MEAN, _SECO_STD,
        "Apache-2.0", SECO_PAPER, "sentinel2", {"BigEarthNet": 87.81}),
    _tg("resnet18_landsat_tm_toa_moco", "resnet18", "ResNet18_Weights.LANDSAT_TM_TOA_MOCO",
        _L + "resnet18_landsat_tm_toa_moco-1c691b4f.pth", "ResNet-18, Landsat 4-5 TM TOA, SSL4EO-L MoCo",
        "Landsat 4-5 TM", TM_TOA_BANDS, _L_255, _const(0, 7), _const(255, 7), "CC0-1.0", SSL4EO_L_PAPER, "landsat",
        {"NLCD (Acc)": 67.65, "CDL (Acc)": 68.70}),
    _tg("resnet50_landsat_tm_toa_moco", "resnet50", "ResNet50_Weights.LANDSAT_TM_TOA_MOCO",
        _L + "resnet50_landsat_tm_toa_moco-ba1ce753.pth", "ResNet-50, Landsat 4-5 TM TOA, SSL4EO-L MoCo",
        "Landsat 4-5 TM", TM_TOA_BANDS, _L_255, _const(0, 7), _const(255, 7), "CC0-1.0", SSL4EO_L_PAPER, "landsat",
        {"NLCD (Acc)": 68.75, "CDL (Acc)": 69.45}),
    _tg("resnet18_landsat_oli_tirs_toa_moco", "resnet18", "ResNet18_Weights.LANDSAT_OLI_TIRS_TOA_MOCO",
        _L + "resnet18_landsat_oli_tirs_toa_moco-a3002f51.pth",
        "ResNet-18, Landsat 8-9 OLI/TIRS TOA, SSL4EO-L MoCo", "Landsat 8-9 OLI/TIRS", OLI_TIRS_TOA_BANDS, _L_255,
        _const(0, 11), _const(255, 11), "CC0-1.0", SSL4EO_L_PAPER, "landsat",
        {"NLCD (Acc)": 67.82, "CDL (Acc)": 65.74}),
    _tg("resnet50_landsat_oli_tirs_toa_moco", "resnet50", "ResNet50_Weights.LANDSAT_OLI_TIRS_TOA_MOCO",
        _L + "resnet50_landsat_oli_tirs_toa_moco-de7f5e0f.pth",
        "ResNet-50, Landsat 8-9 OLI/TIRS TOA, SSL4EO-L MoCo", "Landsat 8-9 OLI/TIRS", OLI_TIRS_TOA_BANDS, _L_255,
        _const(0, 11), _const(255, 11), "CC0-1.0", SSL4EO_L_PAPER, "landsat",
        {"NLCD (Acc)": 69.17, "CDL (Acc)": 67.29}),
    _tg("resnet18_landsat_oli_sr_moco", "resnet18", "ResNet18_Weights.LANDSAT_OLI_SR_MOCO",
        _L + "resnet18_landsat_oli_sr_moco-660e82ed.pth", "ResNet-18, Landsat 8-9 OLI SR, SSL4EO-L MoCo",
        "Landsat 8-9 OLI", OLI_SR_BANDS, _L_255, _const(0, 7), _const(255, 7), "CC0-1.0", SSL4EO_L_PAPER,
        "landsat", {"NLCD (Acc)": 67.01, "CDL (Acc)": 68.05}),
    _tg("resnet50_landsat_oli_sr_moco", "resnet50", "ResNet50_Weights.LANDSAT_OLI_SR_MOCO",
        _L + "resnet50_landsat_oli_sr_moco-ff580dad.pth", "ResNet-50, Landsat 8-9 OLI SR, SSL4EO-L MoCo",
        "Landsat 8-9 OLI", OLI_SR_BANDS, _L_255, _const(0, 7), _const(255, 7), "CC0-1.0", SSL4EO_L_PAPER,
        "landsat", {"NLCD (Acc)": 67.44, "CDL (Acc)": 65.96}),
)


def entry_names() -> list:
    return [e.name for e in CATALOGUE]


def find_entry(name: str, backbone: str = "") -> Optional[WeightsEntry]:
    """The entry called ``name``; ``imagenet`` means the ImageNet entry of ``backbone``; else None."""
    key = (name or "").strip().lower()
    if key == "imagenet" and backbone:
        key = f"{backbone}_imagenet"
    return next((e for e in CATALOGUE if e.name == key), None)


def entries_for(backbone: str) -> list:
    return [e for e in CATALOGUE if e.arch == backbone]
