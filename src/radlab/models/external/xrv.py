"""torchxrayvision classifiers as frozen image encoders: DenseNet-121 (224 px) and ResNet-50/101 (512 px).

``xrv:PATH`` takes a local weights file (or a folder holding one):

- a state dict of ``xrv.models.DenseNet`` (``features.*``, ``classifier.*``) — the architecture (growth rate,
  block sizes, classes) is read from the tensor shapes;
- a state dict of the torchvision ResNet inside ``xrv.models.ResNet`` (``conv1.*`` ... ``fc.*``, or with a
  ``model.`` prefix) — the weights files torchxrayvision ships for ResNet-50 have this form;
- a whole pickled DenseNet as torchxrayvision ships them, read without running its code (``weights_only``
  with inert placeholders). Files in torch's pre-1.6 (non-zip) format cannot be read this way; the error says
  how to convert them once with torchxrayvision.

A torchxrayvision weights *name* (e.g. ``xrv:densenet121-res224-all``) is handed to torchxrayvision, which
reads its cache in ``~/.torchxrayvision`` (or downloads, for users with internet).

The classifier answers zero-shot as the encoder's label head (``ClassifierHead``, logits before xrv's sigmoid
and ``op_norm``, which do not change AUC) for the findings it was trained on. Their names come from
torchxrayvision's ``model_urls[name]["labels"]``: for a weights name directly, for a local file by its file name
(as torchxrayvision's cache keeps it, the basename of ``weights_url``); outputs named "" (not trained by that
model) are dropped. A file under another name loads without a head (logged).

Input: the central square (xrv's ``XRayCenterCrop``) resized to the model's size, one channel scaled to
[-1024, 1024] (xrv's ``normalize(img, maxval)``), i.e. mean 0.5 and std 1/2048 on [0, 1] pixels. Pooled features are xrv's ``features2`` (ReLU + global average pool of the last
feature map, 1024-d for DenseNet-121) or the ResNet's pooled ``features`` (2048-d); tokens are that map.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from radlab.models import ENCODERS
from radlab.models.encoder import ClassifierHead, RadEncoder
from radlab.models.external.common import feature_map_output, find_file, load_state_dict_file
from radlab.models.towers import Preprocess, TowerOutput

log = logging.getLogger(__name__)
XRV_MEAN, XRV_STD = 0.5, 0.5 / 1024.0
WEIGHT_PATTERNS = ("*.safetensors", "*.pt", "*.pth", "*.bin")
DENSENET_SIZE, RESNET_SIZE = 224, 512
_LEGACY_HINT = (
    "{file}: torch cannot read this pickled model without running its code (pre-1.6 file format). Convert it "
    "once with torchxrayvision, e.g. `torch.save(xrv.models.DenseNet(weights=NAME).state_dict(), 'out.pt')`, "
    "or pass the weights name (xrv:NAME)."
)


class XRVTower(nn.Module):
    """A torchxrayvision DenseNet, or the torchvision ResNet of an xrv ResNet, as an image tower."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind
        if kind == "densenet":
            self.embed_dim: int = model.classifier.in_features
        else:
            self.embed_dim = model.fc.in_features

    def forward(self, images: torch.Tensor) -> TowerOutput:
        if self.kind == "densenet":
            features = F.relu(self.model.features(images))
        else:
            m = self.model
            x = m.maxpool(m.relu(m.bn1(m.conv1(images))))
            features = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return feature_map_output(features, features.mean(dim=(2, 3)))


def _blocks(state: dict[str, torch.Tensor], pattern: str) -> list[int]:
    counts: dict[int, set[str]] = {}
    for key in state:
        match = re.match(pattern, key)
        if match:
            counts.setdefault(int(match.group(1)), set()).add(match.group(2))
    return [len(counts[i]) for i in sorted(counts)]


def build_densenet(state: dict[str, torch.Tensor]) -> nn.Module:
    """``xrv.models.DenseNet`` with the architecture the state dict's shapes imply, weights loaded strictly."""
    import torchxrayvision as xrv

    growth = state["features.denseblock1.denselayer1.conv2.weight"].shape[0]
    model = xrv.models.DenseNet(
        weights=None, growth_rate=growth, num_init_features=state["features.conv0.weight"].shape[0],
        in_channels=state["features.conv0.weight"].shape[1],
        block_config=tuple(_blocks(state, r"features\.denseblock(\d+)\.denselayer(\d+)\.")),
        bn_size=state["features.denseblock1.denselayer1.conv1.weight"].shape[0] // growth,
        num_classes=state["classifier.weight"].shape[0])
    model.load_state_dict(state, strict=True)
    return model.eval()


def build_resnet(state: dict[str, torch.Tensor]) -> nn.Module:
    """The torchvision Bottleneck ResNet (1-channel stem, as in ``xrv.models.ResNet``), loaded strictly."""
    layers = _blocks(state, r"layer(\d+)\.(\d+)\.")
    model = ResNet(Bottleneck, layers, num_classes=state["fc.weight"].shape[0])
    model.conv1 = nn.Conv2d(state["conv1.weight"].shape[1], 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.load_state_dict(state, strict=True)
    return model.eval()


# torchxrayvision's pathology names -> radlab's canonical findings
PATHOLOGY_MAP: dict[str, str] = {
    "Atelectasis": "atelectasis", "Consolidation": "consolidation", "Infiltration": "infiltration",
    "Pneumothorax": "pneumothorax", "Edema": "edema", "Emphysema": "emphysema", "Fibrosis": "fibrosis",
    "Effusion": "pleural_effusion", "Pneumonia": "pneumonia", "Pleural_Thickening": "pleural_thickening",
    "Cardiomegaly": "cardiomegaly", "Nodule": "nodule", "Mass": "mass", "Hernia": "hernia",
    "Lung Lesion": "lung_lesion", "Fracture": "fracture", "Lung Opacity": "lung_opacity",
    "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
}


def xrv_labels(path_or_name: str) -> list[str] | None:
    """The classifier's output names for an xrv weights name, or for a file named as xrv's cache names it."""
    try:
        import torchxrayvision as xrv
    except ImportError:
        return None
    urls = xrv.models.model_urls
    if path_or_name in urls:
        return list(urls[path_or_name]["labels"])
    name = Path(path_or_name).name
    return next((list(u["labels"]) for u in urls.values() if u["weights_url"].rsplit("/", 1)[-1] == name), None)


# The dataset tokens torchxrayvision's weights file names start with ("nih-pc-chex-mimic_ch-google-openi-kaggle-
# densenet121-..."), as radlab sources: "google" relabels NIH images, "kaggle" is the RSNA Pneumonia challenge,
# "openi" the Indiana University studies (radlab's openi and iu_xray).
WEIGHTS_DATASETS: dict[str, tuple[str, ...]] = {
    "nih": ("nih",), "google": ("nih",), "pc": ("padchest",), "chex": ("chexpert",), "mimic_ch": ("mimic_cxr",),
    "mimic_nb": ("mimic_cxr",), "openi": ("openi", "iu_xray"), "kaggle": ("rsna_pneumonia",),
    "rsna": ("rsna_pneumonia",), "siim": ("siim",), "vin": ("vindr",),
}


def training_sources(path_or_name: str) -> tuple[str, ...]:
    """The radlab sources torchxrayvision weights were trained on, read from the dataset tokens their file name
    starts with (a weights name stands for its file, a folder for the weights file in it); () when the name
    says nothing (a file saved under another name)."""
    name = Path(path_or_name).name
    local = Path(path_or_name).expanduser()
    if local.is_dir():
        name = find_file(local, (), WEIGHT_PATTERNS).name
    else:
        try:
            import torchxrayvision as xrv

            name = xrv.models.model_urls[path_or_name]["weights_url"].rsplit("/", 1)[-1]
        except (ImportError, KeyError):
            pass
    sources: list[str] = []
    for token in name.split("-"):
        if token not in WEIGHTS_DATASETS:
            break
        sources += WEIGHTS_DATASETS[token]
    return tuple(dict.fromkeys(sources))


def classifier_head(linear: nn.Linear, labels: list[str], origin: str) -> ClassifierHead:
    """The trained outputs of the classifier (named, and known to radlab's taxonomy) as a label head."""
    if len(labels) != linear.out_features:
        raise ValueError(f"{origin}: {len(labels)} torchxrayvision labels for {linear.out_features} classifier outputs")
    keep = [i for i, label in enumerate(labels) if label]
    unknown = [labels[i] for i in keep if labels[i] not in PATHOLOGY_MAP]
    if unknown:
        raise ValueError(f"{origin}: torchxrayvision labels {unknown} have no radlab finding in PATHOLOGY_MAP")
    rows = nn.Linear(linear.in_features, len(keep))
    with torch.no_grad():
        rows.weight.copy_(linear.weight[keep])
        rows.bias.copy_(linear.bias[keep])
    return ClassifierHead([PATHOLOGY_MAP[labels[i]] for i in keep], rows)


def _from_weights_name(name: str) -> tuple[XRVTower, int]:
    import torchxrayvision as xrv

    if name.startswith("resnet"):
        model = xrv.models.ResNet(weights=name)
        return XRVTower(model.model, "resnet"), int(getattr(model, "input_resolution", RESNET_SIZE))
    model = xrv.models.DenseNet(weights=name)
    model.op_threshs = None
    return XRVTower(model, "densenet"), int(getattr(model, "input_resolution", DENSENET_SIZE))


def weights_origin(path: str) -> str:
    """The weights file (``path``, or the one in the folder ``path``), else ``path`` as an xrv weights name."""
    local = Path(path).expanduser()
    if local.exists():
        return str(find_file(local, (), WEIGHT_PATTERNS))
    import torchxrayvision as xrv

    if path in xrv.models.model_urls:
        return path
    raise FileNotFoundError(f"{path} is neither a file nor a torchxrayvision weights name")


def load_xrv_tower(origin: str) -> tuple[XRVTower, int]:
    """The tower and its native input size from a weights file or an xrv weights name (``weights_origin``)."""
    file = Path(origin)
    if not file.is_file():
        return _from_weights_name(origin)
    try:
        state = load_state_dict_file(file, "state_dict", "model_state_dict")
    except pickle.UnpicklingError as err:
        raise ValueError(_LEGACY_HINT.format(file=file)) from err
    state = {k: v for k, v in state.items() if k != "op_threshs" and not k.endswith(".op_threshs")}
    if "features.conv0.weight" in state:
        return XRVTower(build_densenet(state), "densenet"), DENSENET_SIZE
    state = {k.removeprefix("model."): v for k, v in state.items()}
    if "conv1.weight" in state and "fc.weight" in state:
        return XRVTower(build_resnet(state), "resnet"), RESNET_SIZE
    raise ValueError(f"{file}: not a torchxrayvision DenseNet or ResNet state dict")


def load_xrv(path: str) -> RadEncoder:
    """An image-only encoder: ``encode_image`` is the normalised pooled feature (no projection); the classifier
    is its label head when its output names are known (module docstring)."""
    origin = weights_origin(path)
    tower, size = load_xrv_tower(origin)
    channels = tower.model.features.conv0.in_channels if tower.kind == "densenet" else tower.model.conv1.in_channels
    preprocess = Preprocess(image_size=size, mean=XRV_MEAN, std=XRV_STD, channels=channels, fit="crop")
    labels = xrv_labels(origin)
    head = None
    if labels is None:
        log.info("%s: classifier output names unknown (not a torchxrayvision weights name or cached file name); "
                 "no label head", origin)
    else:
        head = classifier_head(tower.model.classifier if tower.kind == "densenet" else tower.model.fc, labels, origin)
    return RadEncoder(tower, None, tower.embed_dim, preprocess, head, image_proj=nn.Identity()).eval()


ENCODERS.register("xrv", "torchxrayvision DenseNet/ResNet weights file (or an xrv weights name)")(load_xrv)
