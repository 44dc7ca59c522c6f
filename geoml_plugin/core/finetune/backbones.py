"""The backbones Fine-tune trains, and their labels in the dialog and Processing.

Its own module so that the job (``job``) and the weights checks (``weights``) both
import it, and neither imports the other. The names are written once, in ``models.arch_args``
(torch-free), which also checks them in model files.
"""
from ..models.arch_args import PATCH_BACKBONES as BACKBONES

__all__ = ["BACKBONES", "BACKBONE_LABELS"]

BACKBONE_LABELS = {
    "small_resnet": "Small residual CNN (fast on a CPU)",
    "resnet18": "ResNet-18 (torchvision)",
    "resnet34": "ResNet-34 (torchvision)",
    "resnet50": "ResNet-50 (torchvision)",
    "mobilenet_v2": "MobileNetV2 (torchvision; light, for pretrained starts on a CPU)",
}
