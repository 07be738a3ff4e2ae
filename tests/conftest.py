import pandas as pd
import pytest
from helpers import synthetic_log


@pytest.fixture
def small_log() -> pd.DataFrame:
    return synthetic_log()
