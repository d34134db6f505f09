"""Artefacts generated from code, and the check that the committed copies are current.

From the topic registry in :mod:`mainstay_contracts`: ``schemas/events/<topic>.json``
and ``deploy/kafka/topics.yaml``; from ``schemas/proto``: the protobuf/gRPC
modules and stubs under ``libs/proto/src/mainstay``; from each service's
``asyncapi.asyncapi_document()``: ``schemas/asyncapi/<svc>.yaml``; from all of
these, the service settings classes and the HTTP route declarations: the
generated sections of ``README.md`` (mesh diagram, service map, topic map) and of
``services/<svc>/README.md`` (reference), between ``<!-- generated: NAME -->``
and ``<!-- end generated -->`` markers, the prose around them left as written.

Command line (``./dev gen`` and ``./dev check`` wrap it)::

    python -m mainstay_common.codegen gen   [--root DIR] [--allow-breaking]
    python -m mainstay_common.codegen check [--root DIR] [--base GIT_REV]
"""

from mainstay_common.codegen._errors import CodegenError
from mainstay_common.codegen._events import load_registry, topics_yaml
from mainstay_common.codegen._pipeline import (
    Drift,
    Report,
    check,
    committed_files,
    find_root,
    generate,
    render,
)
from mainstay_common.codegen._proto import LintResult, generate_proto
from mainstay_common.codegen._yaml import dump_yaml

__all__ = [
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
