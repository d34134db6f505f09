"""The exported names are the contract: adding or removing one must be deliberate."""

from __future__ import annotations

import mainstay_common.http


def test_http_exports() -> None:
    assert sorted(mainstay_common.http.__all__) == [
        "HttpServer",
        "PROBE_PATHS",
        "ReadinessCheck",
        "ReadinessProbe",
        "create_http_app",
        "error_response",
        "install_error_handlers",
    ]
    assert all(hasattr(mainstay_common.http, name) for name in mainstay_common.http.__all__)
