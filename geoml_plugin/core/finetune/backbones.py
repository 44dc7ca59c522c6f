"""The backbones Fine-tune trains, and their labels in the dialog and Processing.

Its own module so that the job (``job``) and the weights checks (``weights``) both
import it, and neither imports the other.
"""
BACKBONES = ("small_resnet", "resnet18", "resnet34", "resnet50", "mobilenet_v2")
BACKBONE_LABELS = {
    "small_resnet": "Small residual CNN (fast on a CPU)",
    "resnet18": "ResNet-18 (torchvision)",
    "resnet34": "ResNet-34 (torchvision)",
    "resnet50": "ResNet-50 (torchvision)",
    "mobilenet_v2": "MobileNetV2 (torchvision; segmentation and pixel regression only)",
}
# Backbones refused for patch models (classification, regression from points/polygons): MobileNetV2's features
# reach far past a 32-px cell, so the one-pass map (which shows every window all its neighbours) differs from
# the patches it learnt. Measured on EuroSAT from ImageNet weights: 95.0 % on chips with one cell of context,
# 73–75 % on the map; trained with two cells, 93.1 % and 76–78 % (docs/finetune.md).
DENSE_ONLY = ("mobilenet_v2",)
