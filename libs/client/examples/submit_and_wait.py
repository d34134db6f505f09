"""Submit a task to an agent, print each step as it happens, then the answer.

MAINSTAY_TOKEN=... python submit_and_wait.py AGENT "what to do"
"""

from __future__ import annotations

import asyncio
import sys

from mainstay_client import Mainstay


async def main(agent: str, text: str) -> int:
    async with Mainstay() as mainstay:
        task = await mainstay.submit_task(agent, text)
        print(f"submitted {task.task_id}")
        async for event in task.events(timeout_s=300):
            print(f"{event.type:<16} step={event.step or '-'} {event.reason}".rstrip())
        final = await task.wait()
    if final.type != "task.completed":
        print(f"the task ended {final.type}: {final.reason}", file=sys.stderr)
        return 1
    print(f"answer: {final.answer}")
    print(f"cost: {final.cost_micros or 0} micro-units")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
