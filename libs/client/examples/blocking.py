"""The same from a plain script, without asyncio.

MAINSTAY_TOKEN=... python blocking.py AGENT "what to do"
"""

from __future__ import annotations

import sys

from mainstay_client import MainstaySync

with MainstaySync() as mainstay:
    task = mainstay.submit_task(sys.argv[1], sys.argv[2])
    for event in task.events(timeout_s=300):
        print(event.type, event.step or "")
    final = task.wait()
print(final.answer if final.type == "task.completed" else f"{final.type}: {final.reason}")
