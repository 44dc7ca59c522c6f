"""Few-shot classification (``geoml:metatrain``, ``geoml:fewshot`` and the few-shot panel):
meta-training (``metatrain``) and adaptation (``job``) over episodes, MAML (second- and
first-order) and prototypical networks, patch data and augmentation."""
