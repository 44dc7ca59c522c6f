"""Few-shot meta-learning: episodes, MAML (second- and first-order) and
prototypical networks. Used by ``core.metatrain`` and ``core.fewshot``."""
