"""gRPC plumbing shared by every Mainstay service: the server, its interceptors, channels.

Servicers raise :mod:`mainstay_common.errors`; :class:`GrpcServer` turns them into
statuses. Clients open channels with :func:`create_channel` and wrap calls in
:func:`mainstay_common.errors.map_grpc_errors`, which turns statuses back.
"""

from mainstay_common.grpc._channel import CHANNEL_OPTIONS, MAX_MESSAGE_BYTES, create_channel
from mainstay_common.grpc._interceptors import ErrorMappingInterceptor
from mainstay_common.grpc._server import SERVER_OPTIONS, GrpcServer

__all__ = [
    "CHANNEL_OPTIONS",
    "MAX_MESSAGE_BYTES",
    "SERVER_OPTIONS",
    "ErrorMappingInterceptor",
    "GrpcServer",
    "create_channel",
]
