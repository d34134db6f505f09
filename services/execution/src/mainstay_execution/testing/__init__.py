"""Test doubles of the execution service, importable by its tests, other services' and the demo.

:mod:`.fake_models` is a scripted model server speaking OpenAI's and
Anthropic's APIs on loopback: the real providers are not reachable from the
development machines.
"""
