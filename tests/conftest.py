import os

import pytest
import torch

os.environ.setdefault("PL_DISABLE_FORK", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
