"""The whole mesh starts, an agent registered with the supervisor reaches execution, and a
task answered in plain text completes with that answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from mainstay_execution.testing.fake_models import Reply

if TYPE_CHECKING:
    from mainstay_execution.testing.mesh import FullMesh

pytestmark = pytest.mark.real


@pytest.mark.timeout(300)  # the first test of the module pays for starting the mesh
async def test_a_plain_answer_completes_the_task(full_mesh: FullMesh) -> None:
    full_mesh.models.script("primary", [Reply("the mesh is up", input_tokens=12)])
    async with full_mesh.execution():
        await full_mesh.register_agent("greeter", system_prompt="You answer briefly.")
        await full_mesh.submit("smoke-1", "greeter", "is the mesh up?")
        events = await full_mesh.final("smoke-1")
    assert [e["type"] for e in events][-1] == "task.completed", events
    assert events[-1]["answer"] == "the mesh is up"
