"""Network architectures, built by name from a model file's metadata.

Each family lives in its own module and registers builders with
:func:`register`. ``build_model(name, **args)`` imports the families lazily,
so importing this package does not import torchvision.
"""
from .registry import available_architectures, build_model, register

__all__ = ["available_architectures", "build_model", "register"]
