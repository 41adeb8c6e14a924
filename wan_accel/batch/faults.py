"""What a fault means for a batch (``wan-accel bench``): which errors say a server stopped answering, which say it
cannot run this workflow at all, and the errors a batch itself ends with.

Shared by the one-server loop (:mod:`wan_accel.batch.one_server`) and the Ray workers and driver
(:mod:`wan_accel.batch.ray_worker`, :mod:`wan_accel.batch.ray_batch`).
"""
from __future__ import annotations

from ..client_ws import ConnectionLost
from ..errors import MalformedReply, MissingModel, MissingNodeType, ServerUnreachable, WanAccelError

#: A server that raises one of these stopped answering: its sample goes back, and the server is checked again later.
FAULTS = (ServerUnreachable, ConnectionLost)


class Unforeseen(WanAccelError):
    """An exception nobody foresaw, raised while checking a server or running a sample, as a one-line error."""

    def __init__(self, exc: BaseException, where: str):
        super().__init__(f"unexpected {type(exc).__name__} in {where}: {exc}"[:500])


#: A server that raises one of these cannot run this workflow: it is left out of the batch.
UNUSABLE = (MissingModel, MissingNodeType, MalformedReply, Unforeseen)


class NoServerLeft(WanAccelError):
    """Every server or worker of the batch is left out or has stopped answering; what finished is saved."""

    exit_code = 3
