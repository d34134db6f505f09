"""The generated parts of the READMEs: the mesh diagram, the service and topic maps,
and each service's reference (topics in and out, RPCs, HTTP routes, settings).

``README.md`` holds the sections ``mesh-diagram``, ``service-map`` and
``topic-map``; ``services/<svc>/README.md`` holds ``reference``. The prose
around them stays as written (see ``_sections``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Final

from mainstay_common.codegen._events import EVENTS_DIR
from mainstay_common.codegen._mesh import Service, mesh_services, service_dirs
from mainstay_common.codegen._sections import splice
from mainstay_contracts import event_schema_filename

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from mainstay_common.codegen._routes import Route
    from mainstay_common.codegen._settings_doc import SettingRow
    from mainstay_contracts import TopicRegistry, TopicSpec

__all__ = ["ROOT_README", "doc_files", "doc_targets", "root_sections", "service_sections"]

ROOT_README: Final = "README.md"
_SERVICE_README: Final = "services/{service}/README.md"
_COMMON_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
_CLIENTS: Final = "clients"
_NONE: Final = "—"
_UNITS: Final = (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000))


def doc_targets(root: Path) -> list[str]:
    """The Markdown files holding generated sections (whether or not they exist yet)."""
    return [ROOT_README] + [
        _SERVICE_README.format(service=directory.name) for directory in service_dirs(root)
    ]


def doc_files(
    root: Path, registry: TopicRegistry, documents: Mapping[str, Mapping[str, object]]
) -> dict[str, bytes]:
    """Each target file with its generated sections brought up to date."""
    services = mesh_services(root, registry, documents)
    files: dict[str, bytes] = {}
    wanted: dict[str, tuple[dict[str, str], str]] = {
        ROOT_README: (root_sections(registry, services), "# Mainstay\n")
    }
    for service in services:
        path = _SERVICE_README.format(service=service.name)
        wanted[path] = (service_sections(service, registry), f"# {service.name}\n")
    for path, (sections, title) in wanted.items():
        target = root / path
        text = target.read_text(encoding="utf-8") if target.is_file() else title
        files[path] = splice(text, sections, where=path).encode()
    return files


def root_sections(registry: TopicRegistry, services: list[Service]) -> dict[str, str]:
    return {
        "mesh-diagram": _mesh_diagram(registry, services),
        "service-map": _service_map(services),
        "topic-map": _topic_map(registry, services),
    }


def service_sections(service: Service, registry: TopicRegistry) -> dict[str, str]:
    return {"reference": _reference(service, registry)}


# --- the root README ---------------------------------------------------------------


def _mesh_diagram(registry: TopicRegistry, services: list[Service]) -> str:
    producers, consumers = _flows(services)
    everyone = {service.name for service in services}
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    mesh_wide: list[str] = []
    for spec in registry:
        sources = producers.get(spec.name, set())
        if len(everyone) > 1 and sources >= everyone:
            mesh_wide.append(spec.name)
            continue
        if not sources and spec.kind == "cmd":
            sources = {_CLIENTS}
        for source in sorted(sources):
            for target in sorted(consumers.get(spec.name, set()) - {source}):
                edges[source, target].append(_short(spec))
    lines = ["```mermaid", "flowchart LR"]
    if any(source == _CLIENTS for source, _ in edges):
        lines.append(f'    {_CLIENTS}(["agent apps and operators"])')
    lines += [f'    {_node(service.name)}["{service.name}"]' for service in services]
    for (source, target), topics in sorted(edges.items()):
        lines.append(f'    {_node(source)} -->|"{"<br>".join(topics)}"| {_node(target)}')
    lines.append("```")
    notes = [
        "",
        "Arrows are topics (`<owner>.` left off), from the services that publish them to the"
        " services that consume them, as the services' AsyncAPI documents declare; *agent apps"
        " and operators* stand for commands no service publishes. Synchronous calls (gRPC to"
        " memory, HTTP to identity) are not drawn.",
    ]
    if mesh_wide:
        listed = ", ".join(f"`{name}`" for name in mesh_wide)
        readers = sorted({c for name in mesh_wide for c in consumers.get(name, set())})
        notes.append(
            f"Every service also publishes {listed} (read by {', '.join(readers) or 'nobody'});"
            " those arrows are left out."
        )
    return "\n".join(lines + notes)


def _service_map(services: list[Service]) -> str:
    rows = [
        "| service | owns | sync API | PostgreSQL schema | consumes | produces |",
        "|---|---|---|---|---|---|",
    ]
    for service in services:
        readme = _SERVICE_README.format(service=service.name)
        rows.append(
            _row(
                f"[`{service.name}`]({readme}#reference)",
                _text(service.summary),
                "<br>".join(_sync_api(service)),
                f"`{service.schema}`" if service.schema else _NONE,
                _topics_cell(service.consumed_topics),
                _topics_cell(service.produces),
            )
        )
    return "\n".join(rows)


def _sync_api(service: Service) -> list[str]:
    parts: list[str] = []
    for name in sorted({rpc.service for rpc in service.rpcs}):
        port = service.ports.get("grpc_port")
        parts.append(f"gRPC `{name}`" + (f" on {port}" if port is not None else ""))
    routes = [route for route in service.routes if route.path not in _COMMON_PATHS]
    port = service.ports.get("http_port")
    on = f" on {port}" if port is not None else ""
    if routes:
        parts.append(f"HTTP{on}: {len(routes)} route{'s' if len(routes) > 1 else ''}")
    elif service.routes:
        parts.append(f"HTTP{on}: probes and metrics only")
    return parts or [_NONE]


def _topic_map(registry: TopicRegistry, services: list[Service]) -> str:
    producers, consumers = _flows(services)
    owners = _owner_services(services)
    rows = [
        "| topic | owner | key | partitions | retention | producers → consumers | payload |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in registry:
        flow = (
            f"{_names(producers.get(spec.name, set()))} → {_names(consumers.get(spec.name, set()))}"
        )
        payload = f"[`{spec.payload.__name__}`]({_schema_link(spec.name)})"
        if spec.description:
            payload += f": {_text(spec.description)}"
        prefix = f"mainstay.{spec.owner}."
        if spec.event_types:
            types = ", ".join(f"`{t.removeprefix(prefix)}`" for t in spec.event_types)
            payload += f" Types: {types}."
        rows.append(
            _row(
                f"`{spec.name}`",
                owners.get(spec.owner, spec.owner),
                f"`{spec.key_field}`",
                str(spec.partitions),
                _retention(spec),
                flow,
                payload,
            )
        )
    notes = [
        "",
        "Producers and consumers are services, from their AsyncAPI documents under"
        " `schemas/asyncapi/`; `—` as the producer: no service publishes the topic, agent"
        " applications and operators do (for instance with the `mainstay` CLI). Each consumer"
        " group also owns its retry topics `<group>.retry.<n>` and its dead-letter topic"
        " `<group>.dlq` (see each service's reference). `deploy/kafka/topics.yaml` has the"
        " full topic configuration.",
    ]
    return "\n".join(rows + notes)


# --- a service's README ------------------------------------------------------------


def _reference(service: Service, registry: TopicRegistry) -> str:
    schema_note = (
        f"PostgreSQL schema `{service.schema}`" if service.schema else "No PostgreSQL schema"
    )
    ports = ", ".join(f"{name.replace('_', ' ')} {port}" for name, port in service.ports.items())
    lines = [
        "## Reference",
        "",
        f"{schema_note}; default {ports or 'ports: none'}. Generated from the topic registry,"
        f" `schemas/asyncapi/{service.name}.yaml`, the proto files, the HTTP route declarations"
        " and the settings class.",
        "",
        "### Topics in",
        "",
    ]
    if service.consumes:
        lines += [
            "| topic | consumer group | retries | dead letters |",
            "|---|---|---|---|",
            *(
                _row(
                    _topic_link(consumer.topic, registry, depth=2),
                    f"`{consumer.group}`",
                    _retries(consumer.retry, consumer.retry_topics),
                    f"`{consumer.dead_letters}`" if consumer.dead_letters else _NONE,
                )
                for consumer in service.consumes
            ),
            "",
            "Group and topic names get `MAINSTAY_KAFKA_TOPIC_PREFIX` in front when it is set.",
        ]
    else:
        lines.append("None.")
    lines += ["", "### Topics out", ""]
    if service.produces:
        lines += ["| topic | what |", "|---|---|"]
        for topic in service.produces:
            description = registry.get(topic).description if topic in registry else ""
            lines.append(_row(_topic_link(topic, registry, depth=2), _text(description) or _NONE))
    else:
        lines.append("None.")
    if service.rpcs:
        lines += ["", "### RPCs", ""]
        for name in sorted({rpc.service for rpc in service.rpcs}):
            lines += [f"`{name}`:", "", "| RPC | request → response | what |", "|---|---|---|"]
            lines += [
                _row(f"`{rpc.name}`", f"`{rpc.request}` → `{rpc.response}`", _text(rpc.summary))
                for rpc in service.rpcs
                if rpc.service == name
            ]
            lines.append("")
        lines.pop()
    lines += ["", "### HTTP routes", ""]
    lines += _routes_table(service.routes)
    lines += ["", "### Settings", ""]
    lines += _settings_tables(service.settings)
    return "\n".join(lines)


def _routes_table(routes: list[Route]) -> list[str]:
    if not routes:
        return ["None."]
    lines = ["| method | path | what |", "|---|---|---|"]
    for route in routes:
        method = "any (mounted app)" if route.method == "*" else route.method
        lines.append(_row(method, f"`{route.path}`", _text(route.summary)))
    return lines


def _settings_tables(rows: list[SettingRow]) -> list[str]:
    header = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    own = [row for row in rows if not row.shared]
    shared = [row for row in rows if row.shared]
    lines = [*header, *(_setting(row) for row in own)] if own else ["None of its own."]
    if shared:
        groups = sorted({row.prefix for row in shared})
        lines += [
            "",
            "<details><summary>The shared groups ("
            + ", ".join(f"<code>{group}*</code>" for group in groups)
            + "), the same in every service</summary>",
            "",
            *header,
            *(_setting(row) for row in shared),
            "",
            "</details>",
        ]
    return lines


def _setting(row: SettingRow) -> str:
    return _row(f"`{row.variable}`", row.type, row.default, _text(row.description))


# --- helpers ------------------------------------------------------------------------


def _flows(services: list[Service]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    producers: dict[str, set[str]] = defaultdict(set)
    consumers: dict[str, set[str]] = defaultdict(set)
    for service in services:
        for topic in service.produces:
            producers[topic].add(service.name)
        for topic in service.consumed_topics:
            consumers[topic].add(service.name)
    return producers, consumers


def _owner_services(services: list[Service]) -> dict[str, str]:
    return {owner: service.name for service in services for owner in service.owners}


def _short(spec: TopicSpec[Any]) -> str:
    return spec.name.removeprefix(f"{spec.owner}.")


def _node(name: str) -> str:
    return name.replace("-", "_")


def _names(names: set[str]) -> str:
    return ", ".join(sorted(names)) or _NONE


def _topics_cell(topics: list[str]) -> str:
    return "<br>".join(f"`{topic}`" for topic in topics) or _NONE


def _schema_link(topic: str, depth: int = 0) -> str:
    return "../" * depth + f"{EVENTS_DIR}/{event_schema_filename(topic)}"


def _topic_link(topic: str, registry: TopicRegistry, *, depth: int) -> str:
    if topic not in registry:
        return f"`{topic}`"
    return f"[`{topic}`]({_schema_link(topic, depth)})"


def _retries(mode: str, topics: tuple[str, ...]) -> str:
    if mode == "blocking":
        return "in place (blocking), then the DLQ"
    if mode == "tiers" and topics:
        span = f"`{topics[0]}`" if len(topics) == 1 else f"`{topics[0]}` … `{topics[-1]}`"
        return f"{len(topics)} tiers: {span}"
    return mode or _NONE


def _retention(spec: TopicSpec[Any]) -> str:
    if spec.compacted:
        return "compacted"
    if spec.retention_ms is None:
        return "broker default"
    if spec.retention_ms == -1:
        return "forever"
    for unit, size in _UNITS:
        if spec.retention_ms % size == 0:
            return f"{spec.retention_ms // size} {unit}"
    return f"{spec.retention_ms} ms"


def _text(text: str) -> str:
    """Prose from code (descriptions, docstrings) made safe for Markdown: outside code
    spans, ``<tenant>`` would be taken for an HTML tag and vanish."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _row(*cells: str) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _cell(text: str) -> str:
    # A bare | would end the cell; already-escaped ones (\|) stay as they are.
    escaped = text.replace("\\|", "\0").replace("|", "\\|").replace("\0", "\\|")
    return " ".join(escaped.split()) or " "
