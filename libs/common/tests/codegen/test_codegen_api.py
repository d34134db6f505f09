"""The codegen package's public names are a contract."""

from __future__ import annotations

import mainstay_common.codegen


def test_exported_names() -> None:
    assert sorted(mainstay_common.codegen.__all__) == [
        "CodegenError",
        "Drift",
        "LintResult",
        "Report",
        "check",
        "committed_files",
        "dump_yaml",
        "find_root",
        "generate",
        "generate_proto",
        "load_registry",
        "render",
        "topics_yaml",
    ]
    for name in mainstay_common.codegen.__all__:
        assert hasattr(mainstay_common.codegen, name), name
