"""The generated sections of the READMEs: maps of the mesh and each service's reference."""

from __future__ import annotations

import re
import shutil
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

from mainstay_common.codegen import CodegenError, check, generate, render
from mainstay_common.codegen.__main__ import main
from mainstay_contracts import REGISTRY, TopicRegistry, TopicSpec

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PACKAGE = "mainstay_codegen_docs_demo"
SERVICE_README = "services/demo-docs/README.md"


class Account(BaseModel):
    account_id: str


class CloseAccount(BaseModel):
    account_id: str


ACCOUNTS = TopicSpec(
    name="demo.evt.account.v1",
    owner="demo",
    kind="evt",
    key_field="account_id",
    payload=Account,
    partitions=12,
    compacted=True,
    description="Latest state of every account.",
)
CLOSE = TopicSpec(
    name="demo.cmd.close-account.v1",
    owner="demo",
    kind="cmd",
    key_field="account_id",
    payload=CloseAccount,
    partitions=4,
    retention_ms=3_600_000,
    description="Close an account for good.",
)
AUDIT = TopicSpec(
    name="demo.evt.audit.v1",
    owner="demo",
    kind="evt",
    key_field="account_id",
    payload=Account,
    description="Who touched which account.",
)


def registry_of(*specs: TopicSpec[Any]) -> TopicRegistry:
    registry = TopicRegistry()
    for spec in specs:
        registry.register(spec)
    return registry


DEMO_REGISTRY = registry_of(ACCOUNTS, CLOSE)

ROOT_README = """\
# Demo mesh

Prose before the maps.

<!-- generated: topic-map -->
<!-- end generated -->

Prose between the maps.

<!-- generated: service-map -->
| a hand-written table that is out of date |
<!-- end generated -->

Prose after the maps.
"""

FILES = {
    "pyproject.toml": """\
        [project]
        name = "mainstay-demo-docs"
        description = "Mainstay demo docs: accounts, opened and closed."
        """,
    f"src/{PACKAGE}/__init__.py": "",
    f"src/{PACKAGE}/settings.py": """\
        from pydantic import Field, SecretStr
        from pydantic_settings import BaseSettings, SettingsConfigDict

        from mainstay_common.settings import ServiceSettings


        class LimitsSettings(BaseSettings):
            model_config = SettingsConfigDict(env_prefix="DEMO_LIMITS_", extra="ignore")

            label: str = Field(default="standard", description="Which <tier> of limits applies.")
            per_minute: int = 60


        class DemoSettings(ServiceSettings):
            model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")

            service_name: str = "demo-docs"
            http_port: int = Field(default=8199, ge=0, le=65535)
            greeting: str = Field(default="hello", description="What the demo | says first.")
            api_keys: list[SecretStr] = Field(default_factory=list, description="API keys.")
            signing_key: SecretStr | None = SecretStr("do-not-print-me")
            limits: LimitsSettings = Field(default_factory=LimitsSettings)
        """,
    f"src/{PACKAGE}/asyncapi.py": """\
        def asyncapi_document():
            def channel(name):
                return {"address": name}

            return {
                "asyncapi": "3.0.0",
                "info": {"title": "demo", "version": "v1"},
                "channels": {
                    "demo.cmd.close-account.v1": channel("demo.cmd.close-account.v1"),
                    "demo.evt.account.v1": channel("demo.evt.account.v1"),
                },
                "operations": {
                    "receive demo.close": {
                        "action": "receive",
                        "channel": {"$ref": "#/channels/demo.cmd.close-account.v1"},
                        "x-consumer-group": "demo.close",
                        "x-retry": "tiers",
                        "x-retry-topics": ["demo.close.retry.1", "demo.close.retry.2"],
                        "x-dead-letter-topic": "demo.close.dlq",
                    },
                    "send demo.evt.account.v1": {
                        "action": "send",
                        "channel": {"$ref": "#/channels/demo.evt.account.v1"},
                    },
                },
            }
        """,
    # Read, never imported: the routes and the schema come from the source text.
    f"src/{PACKAGE}/app.py": """\
        SCHEMA = "demo"


        async def start(settings, gateway, mcp):
            app = create_http_app(title="demo", version="v1")
            app.include_router(create_router(gateway))
            app.router.routes.append(Route("/mcp", mcp, include_in_schema=False))
        """,
    f"src/{PACKAGE}/handlers/__init__.py": "",
    f"src/{PACKAGE}/handlers/http.py": """\
        from fastapi import APIRouter


        def create_router(accounts):
            router = APIRouter(prefix="/v1")

            @router.get("/accounts/{account_id}")
            async def account(account_id: str):
                \"\"\"One account, with its ``balance`` and its <owner>.

                More detail that stays out of the table.
                \"\"\"

            @router.delete("/accounts/{account_id}", status_code=204)
            async def close(account_id: str):
                pass

            return router
        """,
}


@pytest.fixture
def docs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A workspace with one service, ``demo-docs``, and a README holding two of the maps."""
    root = tmp_path / "repo"
    (root / "schemas").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["services/*"]\n')
    (root / "README.md").write_text(ROOT_README)
    for relative, text in FILES.items():
        path = root / "services/demo-docs" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield root
    forget_demo_modules()


def forget_demo_modules() -> None:
    for name in [module for module in sys.modules if module.startswith(PACKAGE)]:
        del sys.modules[name]


def readme(root: Path, relative: str = "README.md") -> str:
    return (root / relative).read_text()


def test_the_maps_follow_the_registry_and_the_services(docs_root: Path) -> None:
    report = generate(docs_root, registry=DEMO_REGISTRY)
    assert report.ok
    assert {"README.md", SERVICE_README} <= set(report.written)
    text = readme(docs_root)

    # The prose stays where it was, in order; the stale table is gone.
    assert text.startswith("# Demo mesh\n\nProse before the maps.\n\n<!-- generated: topic-map")
    assert text.index("Prose between") < text.index("Prose after")
    assert "a hand-written table" not in text
    assert (
        "| `demo.cmd.close-account.v1` | demo-docs | `account_id` | 4 | 1 h | — → demo-docs | "
        "[`CloseAccount`](schemas/events/demo.cmd.close-account.v1.json): Close an account for"
        " good. |"
    ) in text
    assert (
        "| `demo.evt.account.v1` | demo-docs | `account_id` | 12 | compacted | demo-docs → — |"
    ) in text
    assert (
        "| [`demo-docs`](services/demo-docs/README.md#reference) | accounts, opened and closed."
        " | HTTP on 8199: 3 routes | `demo` | `demo.cmd.close-account.v1` |"
        " `demo.evt.account.v1` |"
    ) in text
    # The section the README lacked is added at its end, a Mermaid diagram of the mesh.
    diagram = text[text.index("<!-- generated: mesh-diagram") :]
    assert text.rstrip().endswith("<!-- end generated -->")
    assert 'clients -->|"cmd.close-account.v1"| demo_docs' in diagram
    assert check(docs_root, registry=DEMO_REGISTRY).ok


def test_a_service_readme_gets_its_reference(docs_root: Path) -> None:
    generate(docs_root, registry=DEMO_REGISTRY)
    text = readme(docs_root, SERVICE_README)
    assert text.startswith("# demo-docs\n\n<!-- generated: reference")
    assert "PostgreSQL schema `demo`; default http port 8199." in text
    assert (
        "| [`demo.cmd.close-account.v1`](../../schemas/events/demo.cmd.close-account.v1.json)"
        " | `demo.close` | 2 tiers: `demo.close.retry.1` … `demo.close.retry.2`"
        " | `demo.close.dlq` |"
    ) in text
    assert "| GET | `/v1/accounts/{account_id}` | One account, with its `balance` and its &lt;owner&gt;. |" in text  # fmt: skip
    assert "| DELETE | `/v1/accounts/{account_id}` |   |" in text
    assert "| any (mounted app) | `/mcp` |   |" in text
    assert "| GET | `/healthz` |" in text  # every app from create_http_app has the probes
    assert "| `DEMO_GREETING` | string | `hello` | What the demo \\| says first. |" in text
    assert "| `DEMO_LIMITS_LABEL` | string | `standard` | Which &lt;tier&gt; of limits applies. |" in text  # fmt: skip
    assert "| `DEMO_API_KEYS` | JSON list of secrets | `[]` | API keys. |" in text
    assert "| `DEMO_SIGNING_KEY` | secret | (secret) |" in text
    assert "do-not-print-me" not in text
    # Shared groups keep their own prefix: there is no DEMO_KAFKA_BOOTSTRAP.
    assert "| `MAINSTAY_KAFKA_BOOTSTRAP` | string | `127.0.0.1:19092` |" in text
    assert "DEMO_KAFKA_" not in text
    assert "### RPCs" not in text


def test_every_documented_variable_is_one_the_settings_read(
    docs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate(docs_root, registry=DEMO_REGISTRY)
    text = readme(docs_root, SERVICE_README)
    strings = re.findall(r"^\| `([A-Z0-9_]+)` \| string \|", text, flags=re.MULTILINE)
    numbers = re.findall(r"^\| `([A-Z0-9_]+)` \| int \|", text, flags=re.MULTILINE)
    assert {"DEMO_GREETING", "DEMO_LIMITS_LABEL", "MAINSTAY_POSTGRES_DSN"} <= set(strings)
    assert {"DEMO_LIMITS_PER_MINUTE", "MAINSTAY_KAFKA_MAX_BATCH"} <= set(numbers)
    for variable in strings:
        monkeypatch.setenv(variable, f"from-{variable.lower()}")
    for number, variable in enumerate(numbers, start=7000):
        monkeypatch.setenv(variable, str(number))

    settings = sys.modules[f"{PACKAGE}.settings"].DemoSettings()
    values = set(leaves(settings.model_dump()))
    assert {f"from-{variable.lower()}" for variable in strings} <= values
    assert set(range(7000, 7000 + len(numbers))) <= values


def leaves(value: object) -> Iterator[object]:
    if isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    else:
        yield value


def test_check_names_the_file_and_the_stale_section(
    docs_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate(docs_root, registry=DEMO_REGISTRY)
    path = docs_root / "README.md"
    # Prose outside the markers belongs to its authors.
    path.write_text(path.read_text().replace("Prose between the maps.", "Edited prose."))
    assert check(docs_root, registry=DEMO_REGISTRY).ok

    path.write_text(path.read_text().replace("| 1 h | — → demo-docs |", "| 1 h | nobody |"))
    report = check(docs_root, registry=DEMO_REGISTRY)
    assert [(d.path, d.status, d.sections) for d in report.stale] == [
        ("README.md", "changed", ("topic-map",))
    ]
    assert not report.ok
    assert generate(docs_root, registry=DEMO_REGISTRY).written == ["README.md"]
    assert "Edited prose." in path.read_text()

    # The CLI reads the mesh's real registry, where no demo topic exists: it names
    # each stale file and section, and shows the difference.
    assert main(["check", "--root", str(docs_root)]) == 1
    out = capsys.readouterr().out
    assert "  changed  README.md  (generated sections: mesh-diagram, topic-map)\n" in out
    assert f"  changed  {SERVICE_README}  (generated section: reference)\n" in out
    assert "-| `demo.cmd.close-account.v1` |" in out


def test_a_new_topic_or_setting_makes_the_documents_stale(docs_root: Path) -> None:
    generate(docs_root, registry=DEMO_REGISTRY)
    with_audit = registry_of(ACCOUNTS, CLOSE, AUDIT)
    report = check(docs_root, registry=with_audit)
    assert [(d.path, d.sections) for d in report.stale if d.path.endswith(".md")] == [
        ("README.md", ("topic-map",))
    ]

    settings = docs_root / f"services/demo-docs/src/{PACKAGE}/settings.py"
    settings.write_text(
        settings.read_text()
        + "    farewell: str = Field(default='bye', description='Last words.')\n"
    )
    forget_demo_modules()
    report = check(docs_root, registry=DEMO_REGISTRY)
    assert [(d.path, d.sections) for d in report.stale] == [(SERVICE_README, ("reference",))]
    assert "+| `DEMO_FAREWELL` | string | `bye` | Last words. |" in report.stale[0].diff


def test_an_unknown_or_unclosed_section_is_an_error(
    docs_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = docs_root / "README.md"
    path.write_text(ROOT_README + "<!-- generated: nonsense -->\nx\n<!-- end generated -->\n")
    with pytest.raises(CodegenError, match=r"README.md: unknown generated section\(s\) nonsense"):
        check(docs_root, registry=DEMO_REGISTRY)
    assert main(["gen", "--root", str(docs_root)]) == 1
    assert "error: README.md: unknown generated section(s) nonsense" in capsys.readouterr().err

    path.write_text(ROOT_README.replace("<!-- end generated -->\n\nProse between", "Prose"))
    with pytest.raises(
        CodegenError, match=r"README.md:8: section service-map starts inside section topic-map"
    ):
        generate(docs_root, registry=DEMO_REGISTRY)
    path.write_text("# Demo\n\n<!-- generated: topic-map -->\n")
    with pytest.raises(CodegenError, match="section topic-map is never closed"):
        render(docs_root, DEMO_REGISTRY)


def test_rpcs_come_from_the_proto_files(docs_root: Path, demo_proto: Path) -> None:
    # mainstay.demo.v1 belongs to the service that owns the demo topics.
    shutil.copytree(demo_proto, docs_root / "schemas/proto")
    generate(docs_root, registry=DEMO_REGISTRY)
    text = readme(docs_root, SERVICE_README)
    assert "### RPCs\n\n`mainstay.demo.v1.DemoService`:" in text
    assert "| `Ping` | `PingRequest` → `PingResponse` |" in text
    assert "gRPC `mainstay.demo.v1.DemoService`<br>HTTP on 8199" in readme(docs_root)


def test_the_committed_readmes_document_the_real_mesh(repo_root: Path) -> None:
    # (test_the_committed_files_are_current proves they are current; this, that they say it.)
    text = readme(repo_root)
    for spec in REGISTRY:
        assert f"| `{spec.name}` |" in text
    assert "| [`tools-gateway`](services/tools-gateway/README.md#reference) |" in text
    gateway = readme(repo_root, "services/tools-gateway/README.md")
    assert "| `TOOLS_GATEWAY_VAULT_KEYS` | JSON list of secrets | `[]` |" in gateway
    assert "| `TOOLS_GATEWAY_BREAKER_OPEN_S` | float | `30` |" in gateway
    assert "TOOLS_GATEWAY_KAFKA_" not in gateway
    assert "| `tools.invoke` |" in gateway
    memory = readme(repo_root, "services/memory/README.md")
    assert "| `Recall` | `RecallRequest` → `RecallResponse` |" in memory
    supervisor = readme(repo_root, "services/supervisor/README.md")
    assert "| POST | `/v1/dlq/{topic}/replay` |" in supervisor
