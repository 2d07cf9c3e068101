"""Fixtures the integration tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A trustme CA with server and client certificates (edge_helpers.Certs), per module."""
    from edge_helpers import make_certs     # trustme is a test dependency of the edge tests
    return make_certs(tmp_path_factory.mktemp("certs"))
