"""A fixture for modules that train tiny models: one torch thread.

Tiny networks train faster on one thread, and many times faster on a busy
machine, where idle OpenMP threads would otherwise spin against other jobs.
Import it into a test module: ``from tests.torch_threads import one_thread``.
"""
import pytest


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
