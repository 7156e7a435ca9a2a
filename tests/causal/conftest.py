"""Analysis tests work on tiny tensors (d = 32..128), where one intra-op thread is fastest.

Several threads synchronising on every small op are much slower, badly so on a loaded shared
machine, so these tests run single-threaded and restore the setting afterwards.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
