from __future__ import annotations

import pytest

BACKENDS = ["sequential", "threads", "local"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend: the contract tests must hold on each."""
    return request.param
