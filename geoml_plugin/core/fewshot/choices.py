"""The meta-training algorithms and backbones ``geoml:metatrain`` offers, with their labels
(one list for Processing and the few-shot panel, so the panel does not import Processing)."""

ALGORITHM_CHOICES = [("protonet", "Prototypical networks (fast, recommended)"), ("maml", "MAML (second order)"),
                     ("fomaml", "First-order MAML")]
BACKBONE_CHOICES = [("small_cnn", "Small CNN (fast on a CPU)"), ("resnet18", "ResNet-18 (GroupNorm, slower)")]
