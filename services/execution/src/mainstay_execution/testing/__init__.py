"""Test doubles of the execution service, importable by its tests, other services', the demo
and the benchmarks.

:mod:`.fake_models` is a scripted model server speaking OpenAI's and
Anthropic's APIs on loopback: the real providers are not reachable from the
development machines. :mod:`.toolserver` is an HTTP tool server that counts
what really ran. :mod:`.mesh` starts the whole mesh (identity, ledger, memory,
the tools gateway, the supervisor) on loopback around execution instances, and
:mod:`.events` reads a task's events back as a submitter would. :mod:`.mesh`
imports the other services' packages, so it needs the whole workspace installed
(as the workspace's ``.venv`` is); the other modules need only this package.
"""
