import os

import pytest
import torch

# Two cores: keep each test process from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def digits_cfg(tmp_path):
    """The smallest real preset (scikit-learn digits), writing into a temporary run directory."""
    from simsiam import get_preset

    cfg = get_preset("digits")
    cfg.run.out_dir = str(tmp_path / "run")
    cfg.run.quiet = True
    cfg.optim.epochs = 2
    return cfg
