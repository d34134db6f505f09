"""Test support for Mainstay services: a pytest plugin with the embedded stack.

The plugin (``-p mainstay_common.testing.plugin``, already in the workspace's
pytest options) provides ``mainstay_stack``, ``kafka_bootstrap``,
``postgres_dsn``, ``topic_prefix`` and ``pg_schema``; see its module docstring.
:func:`read_records` reads what a service published (:func:`assign_from_beginning`
sets a consumer of one's own up to read it all, :class:`TopicTail` follows topics in
the background); :func:`temporary_database`
gives a test or a benchmark a database of its own, :class:`PrivateBroker` a broker
of its own to stop and start again.
"""

from mainstay_common.testing._addresses import StackAddresses
from mainstay_common.testing._broker import PrivateBroker
from mainstay_common.testing._databases import temporary_database, with_database
from mainstay_common.testing._kafka import TopicTail, assign_from_beginning, read_records
from mainstay_common.testing._stack import start_test_stack

__all__ = [
    "PrivateBroker",
    "StackAddresses",
    "TopicTail",
    "assign_from_beginning",
    "read_records",
    "start_test_stack",
    "temporary_database",
    "with_database",
]
