"""The ``engine`` every store test that takes it runs on; the Milvus server starts when needed."""

from __future__ import annotations

import pytest

from tests.index.engines import ENGINES


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "milvus-server":
        request.getfixturevalue("milvus_server")
    return str(request.param)
