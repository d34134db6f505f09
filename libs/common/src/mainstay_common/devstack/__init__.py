"""The embedded development stack: broker, PostgreSQL and every service on one machine.

From a terminal::

    python -m mainstay_common.devstack up|down|status|logs [component]

From Python (the pytest plugin and the demo use this)::

    stack = EmbeddedStack(home, repo_root, kafka_port=19092, pg_port=15432)
    await stack.up()
    ...
    await stack.down()
"""

from mainstay_common.devstack._home import (
    BROKER,
    HOME_ENV,
    POSTGRES,
    StackError,
    StackHome,
    resolve_home,
)
from mainstay_common.devstack._process import ProcessRecord, free_port, restartable_port
from mainstay_common.devstack._services import ServiceSpec, discover_services
from mainstay_common.devstack._stack import DEFAULT_KAFKA_PORT, DEFAULT_PG_PORT, EmbeddedStack
from mainstay_common.devstack._status import ComponentKind, ComponentState, ComponentStatus

__all__ = [
    "BROKER",
    "DEFAULT_KAFKA_PORT",
    "DEFAULT_PG_PORT",
    "HOME_ENV",
    "POSTGRES",
    "ComponentKind",
    "ComponentState",
    "ComponentStatus",
    "EmbeddedStack",
    "ProcessRecord",
    "ServiceSpec",
    "StackError",
    "StackHome",
    "discover_services",
    "free_port",
    "resolve_home",
    "restartable_port",
]
