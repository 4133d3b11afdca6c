"""Errors raised by the Lathe client.

Every failed call raises a :class:`LatheError` that carries the gRPC status
code and the server's message; an INVALID_ARGUMENT also names the request
field it is about (``error.field``), as the server's message does.
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Type

import grpc

# The server words an INVALID_ARGUMENT "FIELD: what is wrong", where FIELD is
# a request field ("spec.task", "limit", "params.learning_rate").
_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\[\]-]*): ")


class LatheError(Exception):
    """A call the server (or the connection to it) refused.

    Attributes:
        code: the gRPC status code, e.g. ``grpc.StatusCode.NOT_FOUND``.
        message: the server's words.
        field: for INVALID_ARGUMENT, the request field the message names
            (``None`` otherwise, or when the message names none).
    """

    def __init__(self, code: grpc.StatusCode, message: str,
                 field: Optional[str] = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.field = field


class InvalidArgument(LatheError):
    """The request was malformed; ``field`` names the offending field."""


class NotFound(LatheError):
    """The job, dataset, model or checkpoint does not exist (or belongs to
    another team)."""


class AlreadyExists(LatheError):
    """A model of that name exists with other content."""


class PermissionDenied(LatheError):
    """The token's role may not make this call."""


class Unauthenticated(LatheError):
    """The token is missing, malformed, expired or revoked."""


class ResourceExhausted(LatheError):
    """A size or rate limit of the server was reached."""


class FailedPrecondition(LatheError):
    """The call does not fit the job's state (for example pausing a queued
    job)."""


class Unavailable(LatheError):
    """The server cannot be reached."""


class DeadlineExceeded(LatheError):
    """The call, or a wait, ran out of time."""


class DataLoss(LatheError):
    """A downloaded file does not match its SHA-256."""


class JobFailed(LatheError):
    """Raised by :meth:`lathe.Job.wait` when the job ends FAILED or
    CANCELLED. ``job`` is the finished job; ``job.error`` says why."""

    def __init__(self, job) -> None:  # job: lathe.Job
        super().__init__(grpc.StatusCode.ABORTED,
                         f"job {job.id} {job.state}: {job.error}")
        self.job = job


class WaitTimeout(DeadlineExceeded, TimeoutError):
    """Raised by :meth:`lathe.Job.wait` when the job has not finished in
    time; the job itself goes on."""


_BY_CODE: Dict[grpc.StatusCode, Type[LatheError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.DATA_LOSS: DataLoss,
}


def error_for(code: grpc.StatusCode, message: str) -> LatheError:
    """The exception for a status: a subclass of LatheError by code."""
    field = None
    if code in (grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.OUT_OF_RANGE):
        m = _FIELD.match(message)
        if m:
            field = m.group(1)
    return _BY_CODE.get(code, LatheError)(code, message, field)


def from_rpc_error(err: grpc.RpcError) -> LatheError:
    """Turns a gRPC error into a LatheError."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return error_for(code, details or "")
