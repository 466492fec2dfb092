import os
from pathlib import Path

import pytest

from engine.data import mnist_available

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LOTTERY_DATA") or ROOT / "cache" / "data")
needs_mnist = pytest.mark.skipif(not mnist_available(DATA),
                                 reason=f"real MNIST files not found in {DATA}/MNIST/raw (set LOTTERY_DATA)")


@pytest.fixture
def store(tmp_path):
    from engine.store import Store
    return Store(tmp_path / "home")
