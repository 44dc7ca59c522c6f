"""Prototypical networks (Snell et al. 2017): classify by the nearest class mean.

A class is represented by its *prototype*, the mean embedding of its support
patches; a patch belongs to the class whose prototype is nearest (squared
Euclidean distance). Meta-training shapes the embedding so that this works
for classes it has never seen.

The nearest-prototype rule is a linear classifier: ``-|z - c|² = 2 c·z - |c|²
- |z|²``, and the last term is the same for every class, so prototypes become
the weights ``2c`` and biases ``-|c|²`` of an ordinary linear head
(:func:`prototype_head`). That is how an adapted model is saved as a normal
GeoML classifier.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def prototypes(z: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean embedding of each class: ``(n_classes, D)``. Every class needs a sample."""
    onehot = F.one_hot(labels, n_classes).to(z.dtype)  # (N, K)
    counts = onehot.sum(0)
    if (counts == 0).any():
        raise ValueError("every class needs at least one support sample")
    return (onehot.T @ z) / counts[:, None]


def proto_logits(z: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Negative squared Euclidean distances, ``(N, K)``: larger is nearer."""
    return -torch.cdist(z, protos).pow(2)


def proto_loss(z_support, y_support, z_query, y_query, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Episode loss and query accuracy of a prototypical network."""
    logits = proto_logits(z_query, prototypes(z_support, y_support, n_classes))
    return F.cross_entropy(logits, y_query), (logits.argmax(1) == y_query).float().mean()


def prototype_head(protos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and biases of the linear head equivalent to nearest-prototype."""
    return 2.0 * protos, -(protos * protos).sum(1)
