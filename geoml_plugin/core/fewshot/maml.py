"""Model-agnostic meta-learning (Finn et al. 2017), functional and batched.

MAML learns an *initialisation* θ from which a few gradient steps on a task's
support set give a model that does well on that task's query set:

    θ'ᵢ = θ − α ∇θ L_support,i(θ)        (inner loop, ``inner_steps`` times)
    meta-loss = meanᵢ L_query,i(θ'ᵢ)      (outer loop, minimised over θ)

Instead of cloning the module for every task (the learn2learn way), the
network is called as a pure function of a parameter dict
(``torch.func.functional_call``), inner gradients come from
``torch.func.grad``, and all tasks of a meta-batch run at once under
``torch.func.vmap``: one batched forward/backward per inner step instead of a
Python loop over tasks.

* second order (``first_order=False``): the meta-gradient differentiates
  through the inner updates (Hessian-vector products included);
* first order (FOMAML): the inner updates are treated as constants, so the
  meta-gradient of a task is ∇L_query evaluated at θ'ᵢ. Here it is computed
  as the gradient of ``L_query(θ + δᵢ)`` with the adaptation step
  ``δᵢ = θ'ᵢ − θ`` held fixed.

The classifier head is a single learnt row shared by all classes (expanded to
``ways`` rows when a task starts, as in "unicorn" MAML, Ye & Chao 2022): the
initialisation then treats classes symmetrically, does not depend on the
order classes are numbered in, and adapts to any number of classes, e.g. the
analyst's five classes after meta-training on 3-way episodes.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, grad_and_value, vmap


class MAML:
    def __init__(self, model: torch.nn.Module, inner_lr: float = 0.1, inner_steps: int = 3,
                 first_order: bool = False, head_prefix: str = "head.",
                 loss_fn: Callable = F.cross_entropy):
        self.model = model
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.loss_fn = loss_fn
        self.head_keys = {k for k, _ in model.named_parameters() if k.startswith(head_prefix)}

    # -- functional pieces ---------------------------------------------------
    def params(self) -> dict:
        """The meta-parameters θ as plain tensors (detached copies of the module's)."""
        return {k: v.detach() for k, v in self.model.named_parameters()}

    def expand(self, params: dict, ways: int) -> dict:
        """Replicate the shared head row for ``ways`` classes (a view: gradients sum back)."""
        out = dict(params)
        for k in self.head_keys:
            v = params[k]
            out[k] = v.expand(ways, *v.shape[1:]) if v.shape[0] == 1 else v
        return out

    def forward(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    def loss(self, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.forward(params, x), y)

    def adapt(self, params: dict, xs: torch.Tensor, ys: torch.Tensor, ways: int,
              steps: int | None = None, lr: float | None = None) -> dict:
        """Inner loop: ``steps`` gradient steps on the support set from θ."""
        steps = self.inner_steps if steps is None else int(steps)
        lr = self.inner_lr if lr is None else float(lr)
        p = self.expand(params, ways)
        for _ in range(steps):
            g = grad(self.loss)(p, xs, ys)
            p = {k: p[k] - lr * g[k] for k in p}
        return p

    def _query(self, params: dict, xq: torch.Tensor, yq: torch.Tensor):
        logits = self.forward(params, xq)
        return self.loss_fn(logits, yq), (logits.argmax(-1) == yq).float().mean()

    def _task(self, params, xs, ys, xq, yq, ways):
        return self._query(self.adapt(params, xs, ys, ways), xq, yq)

    def _step(self, params, xs, ys, ways):
        """Adaptation step δ = θ' − θ (as the expanded head)."""
        adapted = self.adapt(params, xs, ys, ways)
        base = self.expand(params, ways)
        return {k: adapted[k] - base[k] for k in adapted}

    def _fo_task(self, params, delta, xq, yq, ways):
        base = self.expand(params, ways)
        return self._query({k: base[k] + delta[k] for k in base}, xq, yq)

    # -- meta-gradient -------------------------------------------------------
    def meta_gradient(self, xs, ys, xq, yq, ways: int) -> tuple[dict, float, float]:
        """Meta-gradient over a batch of tasks ``(T, N, ...)``; also mean query loss and accuracy."""
        params = self.params()
        if self.first_order:
            delta = vmap(partial(self._step, ways=ways), in_dims=(None, 0, 0))(params, xs, ys)
            delta = {k: v.detach() for k, v in delta.items()}
            task = partial(self._fo_task, ways=ways)

            def meta_loss(p):
                losses, accs = vmap(task, in_dims=(None, 0, 0, 0))(p, delta, xq, yq)
                return losses.mean(), accs.mean()
        else:
            task = partial(self._task, ways=ways)

            def meta_loss(p):
                losses, accs = vmap(task, in_dims=(None, 0, 0, 0, 0))(p, xs, ys, xq, yq)
                return losses.mean(), accs.mean()

        grads, (loss, acc) = grad_and_value(meta_loss, has_aux=True)(params)
        return grads, float(loss), float(acc)

    def meta_step(self, optimizer: torch.optim.Optimizer, xs, ys, xq, yq, ways: int,
                  sync=None) -> tuple[float, float]:
        """One outer update of θ with ``optimizer``; returns (query loss, query accuracy). ``sync`` (if given)
        is called between the gradient and the update (the gradient average of a distributed run)."""
        grads, loss, acc = self.meta_gradient(xs, ys, xq, yq, ways)
        for k, p in self.model.named_parameters():
            p.grad = grads[k]
        if sync is not None:
            sync()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss, acc

    def evaluate(self, xs, ys, xq, yq, ways: int) -> tuple[float, float]:
        """Adapt on each task's support set and score its query set (no meta-update)."""
        params = self.params()
        losses, accs = vmap(partial(self._task, ways=ways), in_dims=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq)
        return float(losses.mean()), float(accs.mean())
