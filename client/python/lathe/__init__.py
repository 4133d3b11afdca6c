"""Lathe's Python client.

    import lathe
    client = lathe.Client()            # $LATHE_SERVER, $LATHE_TOKEN
    job = client.submit(task="text-classification", model="preset:bert-tiny",
                        train_data="train.jsonl", params={"epochs": 2})
    job.wait(timeout=3600)
    print(job.eval_metrics["accuracy"])
    job.download("model/", checkpoint="best")

docs/python.md has the whole interface.
"""

from lathe.client import DEFAULT_SERVER, Client, Datasets, Job, Models
from lathe.errors import (AlreadyExists, DataLoss, DeadlineExceeded,
                          FailedPrecondition, InvalidArgument, JobFailed,
                          LatheError, NotFound, PermissionDenied,
                          ResourceExhausted, Unauthenticated, Unavailable,
                          WaitTimeout)
from lathe.v1 import lathe_pb2 as pb

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists", "Client", "DEFAULT_SERVER", "DataLoss", "Datasets",
    "DeadlineExceeded", "FailedPrecondition", "InvalidArgument", "Job",
    "JobFailed", "LatheError", "Models", "NotFound", "PermissionDenied",
    "ResourceExhausted", "Unauthenticated", "Unavailable", "WaitTimeout", "pb",
]
