"""MAML and prototypical networks on toy models, against hand-computed references."""
import numpy as np
import pytest
import torch
from torch import nn

from geoml_plugin.core.fewshot.maml import MAML
from geoml_plugin.core.fewshot.protonet import proto_logits, prototype_head, prototypes


class Toy(nn.Module):
    """tanh layer + linear head: small enough to differentiate by hand."""

    def __init__(self, d_in=3, d_hidden=4):
        super().__init__()
        self.body = nn.Linear(d_in, d_hidden)
        self.head = nn.Linear(d_hidden, 1)  # one shared row, expanded per task

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _grads_by_hand(A, c, W, b, x, y):
    """Cross-entropy gradients of the toy network, by the chain rule in numpy."""
    h = np.tanh(x @ A.T + c)
    p = _softmax(h @ W.T + b)
    d_logits = (p - np.eye(W.shape[0])[y]) / len(y)
    d_pre = (d_logits @ W) * (1 - h**2)
    return d_pre.T @ x, d_pre.sum(0), d_logits.T @ h, d_logits.sum(0)


def _tasks(ways=3, shots=2, query=4, tasks=2, d_in=3, seed=0):
    """Each task: ``ways`` Gaussian clusters with their own random centres."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(tasks, ways, d_in, generator=g, dtype=torch.float64)
    ys = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).contiguous()
    yq = torch.arange(ways).repeat_interleave(query).expand(tasks, -1).contiguous()
    pick = lambda y: torch.stack([centres[t, y[t]] for t in range(tasks)])  # noqa: E731
    xs = pick(ys) + 0.5 * torch.randn(tasks, ways * shots, d_in, generator=g, dtype=torch.float64)
    xq = pick(yq) + 0.5 * torch.randn(tasks, ways * query, d_in, generator=g, dtype=torch.float64)
    return xs, ys, xq, yq


@pytest.fixture()
def toy():
    torch.manual_seed(0)
    return Toy().double()


def test_first_order_meta_gradient_equals_hand_computed_reference(toy):
    ways, lr, steps = 3, 0.5, 2
    xs, ys, xq, yq = _tasks(ways)
    grads, _, _ = MAML(toy, lr, steps, first_order=True).meta_gradient(xs, ys, xq, yq, ways)

    p = {k: v.detach().numpy().copy() for k, v in toy.named_parameters()}
    ref = {k: np.zeros_like(v) for k, v in p.items()}
    for t in range(xs.shape[0]):
        A, c = p["body.weight"].copy(), p["body.bias"].copy()
        W, b = np.repeat(p["head.weight"], ways, 0), np.repeat(p["head.bias"], ways, 0)
        for _ in range(steps):
            gA, gc, gW, gb = _grads_by_hand(A, c, W, b, xs[t].numpy(), ys[t].numpy())
            A, c, W, b = A - lr * gA, c - lr * gc, W - lr * gW, b - lr * gb
        gA, gc, gW, gb = _grads_by_hand(A, c, W, b, xq[t].numpy(), yq[t].numpy())
        # FOMAML: query gradient at the adapted weights; the shared head row gets the sum over classes
        for k, g in (("body.weight", gA), ("body.bias", gc), ("head.weight", gW.sum(0, keepdims=True)),
                     ("head.bias", gb.sum(0, keepdims=True))):
            ref[k] += g / xs.shape[0]
    for k in ref:
        np.testing.assert_allclose(grads[k].numpy(), ref[k], rtol=1e-9, atol=1e-12, err_msg=k)


def _meta_loss(maml, params, xs, ys, xq, yq, ways):
    losses = [maml.loss(maml.adapt(params, xs[t], ys[t], ways), xq[t], yq[t]) for t in range(xs.shape[0])]
    return torch.stack(losses).mean()


def test_second_order_meta_gradient_matches_finite_differences_and_differs_from_first_order(toy):
    ways = 3
    xs, ys, xq, yq = _tasks(ways)
    so = MAML(toy, 0.5, 2, first_order=False)
    g_so, loss, _ = so.meta_gradient(xs, ys, xq, yq, ways)
    g_fo, loss_fo, _ = MAML(toy, 0.5, 2, first_order=True).meta_gradient(xs, ys, xq, yq, ways)
    assert loss == pytest.approx(loss_fo)  # same adapted models, same query loss
    params = so.params()
    assert float(_meta_loss(so, params, xs, ys, xq, yq, ways)) == pytest.approx(loss)
    eps = 1e-6
    for k in params:
        num = torch.zeros_like(params[k])
        coords = range(0, params[k].numel(), 2)  # every other coordinate keeps the test fast
        for i in coords:
            hi, lo = dict(params), dict(params)
            d = torch.zeros_like(params[k]).view(-1)
            d[i] = eps
            hi[k] = params[k] + d.view_as(params[k])
            lo[k] = params[k] - d.view_as(params[k])
            num.view(-1)[i] = (_meta_loss(so, hi, xs, ys, xq, yq, ways) - _meta_loss(so, lo, xs, ys, xq, yq, ways)) / (2 * eps)
        torch.testing.assert_close(g_so[k].view(-1)[coords], num.view(-1)[coords], rtol=1e-5, atol=1e-8)
    diff = sum(float((g_so[k] - g_fo[k]).abs().sum()) for k in params)
    assert diff > 1e-3  # second order includes the curvature of the inner loop


def test_adaptation_lowers_the_support_loss(toy):
    ways = 3
    xs, ys, _, _ = _tasks(ways, shots=5, tasks=1)
    maml = MAML(toy, 1.0, 10)
    params = maml.params()
    before = float(maml.loss(maml.expand(params, ways), xs[0], ys[0]))
    after = float(maml.loss(maml.adapt(params, xs[0], ys[0], ways), xs[0], ys[0]))
    assert before == pytest.approx(np.log(ways))  # shared head row: every class equally likely
    assert after < before - 0.1


def test_meta_step_improves_query_loss_on_repeated_tasks(toy):
    ways = 3
    xs, ys, xq, yq = _tasks(ways, tasks=4)
    maml = MAML(toy, 0.5, 1)
    opt = torch.optim.Adam(toy.parameters(), 0.05)
    first = maml.evaluate(xs, ys, xq, yq, ways)[0]
    for _ in range(20):
        maml.meta_step(opt, xs, ys, xq, yq, ways)
    assert maml.evaluate(xs, ys, xq, yq, ways)[0] < first - 0.05


def test_prototypical_net_assigns_a_point_to_its_nearest_prototype():
    z = torch.tensor([[0.0, 0.0], [0.2, 0.0], [5.0, 5.0], [5.0, 4.0], [-4.0, 3.0]])
    y = torch.tensor([0, 0, 1, 1, 2])
    protos = prototypes(z, y, 3)
    torch.testing.assert_close(protos, torch.tensor([[0.1, 0.0], [5.0, 4.5], [-4.0, 3.0]]))
    points = torch.tensor([[0.5, 0.5], [4.0, 4.0], [-3.0, 2.0], [2.8, 2.6]])
    expected = torch.cdist(points, protos).argmin(1)
    assert proto_logits(points, protos).argmax(1).tolist() == expected.tolist() == [0, 1, 2, 1]
    # the equivalent linear head gives the same probabilities
    w, b = prototype_head(protos)
    torch.testing.assert_close(torch.softmax(points @ w.T + b, 1), torch.softmax(proto_logits(points, protos), 1))


def test_prototypes_need_every_class():
    with pytest.raises(ValueError):
        prototypes(torch.zeros(3, 2), torch.tensor([0, 0, 2]), 3)


def test_meta_classifier_views_mean_the_same_transforms_as_predict_views():
    """'2 views' is the patch and its mirror image for the meta-classifier as for geoml:predict."""
    from geoml_plugin.core.models import build_model

    torch.manual_seed(0)
    model = build_model("meta_classifier", in_bands=3, num_classes=4, widths=[8, 16]).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        one = model.embed(x)
        model.views = 2
        torch.testing.assert_close(model.embed(x), (one + model.embedding(x.flip(-1))) / 2)
        model.views = 4
        turns = [model.embedding(torch.rot90(x, r, (-2, -1))) for r in range(4)]
        torch.testing.assert_close(model.embed(x), torch.stack(turns).mean(0))
