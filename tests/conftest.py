"""Shared fixtures and the deterministic hypothesis profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Tests are deterministic: hypothesis draws the same examples on every run, with no
# deadline (this machine is shared and noisy). HYPOTHESIS_PROFILE=dev explores more.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One thread per test process: the suite runs on 2 cores with pytest-xdist (-n 2), and
# tiny tensors are slower with intra-op threads competing for the other core.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
HANNOVER = SHARED_DATA / "hannover-covid-cxr"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every available device: CPU always, CUDA when present."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def hannover_dir() -> Path:
    """The real radiographs in ../shared/data; skips with a message when absent."""
    if not (HANNOVER / "data.csv").is_file():
        pytest.skip(
            f"real chest radiographs not found at {HANNOVER} (the shared data folder "
            "beside the repository); skipping the real-data test"
        )
    return HANNOVER
