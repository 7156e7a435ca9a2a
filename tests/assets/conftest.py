"""glassllm's matrix products are tiny: on a busy 2-core machine, torch's second thread costs
far more in synchronisation than it gains, so these tests run single-threaded."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
