"""The Lathe client: submit fine-tuning jobs, follow them, fetch results.

The server, token and TLS files default as for the ``lathe`` CLI:

* server: ``$LATHE_SERVER``, else ``127.0.0.1:50051``;
* token: ``$LATHE_TOKEN``, else the file ``lathe login`` wrote
  (``$XDG_CONFIG_HOME/lathe/token`` or ``~/.config/lathe/token``);
* TLS: ``$LATHE_TLS_CA`` (verify the server), ``$LATHE_TLS_CERT`` and
  ``$LATHE_TLS_KEY`` (present a client certificate).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import tempfile
import time
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    Optional, Sequence, Tuple, Union)

import grpc

from lathe import errors
from lathe.v1 import lathe_pb2 as pb
from lathe.v1 import lathe_pb2_grpc as pb_grpc

DEFAULT_SERVER = "127.0.0.1:50051"
_CHUNK = 1 << 20
_FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
# The server sends file chunks of 2 MiB; leave room above gRPC's default.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 16 << 20)]

PathLike = Union[str, "os.PathLike[str]"]


def _login_token_file() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(
        os.path.expanduser("~"), ".config")
    return os.path.join(base, "lathe", "token")


def _read_token_file(path: str) -> str:
    try:
        st = os.stat(path)
        with open(path, "r", encoding="utf-8") as f:
            token = f.readline().strip()
    except OSError as e:
        raise errors.error_for(grpc.StatusCode.INVALID_ARGUMENT,
                               f"token_file: cannot read {path}: {e.strerror}")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise errors.error_for(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"token_file: {path} can be read by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    if not token:
        raise errors.error_for(grpc.StatusCode.INVALID_ARGUMENT,
                               f"token_file: {path} is empty")
    return token


def _read_bytes(what: str, path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise errors.error_for(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{what}: cannot read {path}: {e.strerror}")


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(_CHUNK)
            if not b:
                return h.hexdigest()
            h.update(b)


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _clean_relative(name: str) -> bool:
    if not name or name.startswith("/") or "\\" in name:
        return False
    return all(p not in ("", ".", "..") for p in name.split("/"))


class Job:
    """A job on the server, as last seen.

    ``refresh()`` reads it again; ``watch()`` and ``wait()`` keep it current
    as events arrive. ``proto`` is the whole ``lathe.v1.Job`` message.
    """

    def __init__(self, client: "Client", proto: pb.Job) -> None:
        self._client = client
        self.proto = proto

    def __repr__(self) -> str:
        return f"<lathe.Job {self.id} {self.state}>"

    @property
    def id(self) -> str:
        return self.proto.id

    @property
    def state(self) -> str:
        """"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", ..."""
        return pb.JobState.Name(self.proto.state)

    @property
    def done(self) -> bool:
        """True once the job is SUCCEEDED, FAILED or CANCELLED."""
        return self.state in _FINAL

    @property
    def error(self) -> str:
        """Why the job failed (empty otherwise)."""
        return self.proto.error

    @property
    def eval_metrics(self) -> Dict[str, float]:
        """The latest evaluation metrics ("accuracy", "eval_loss", ...)."""
        return dict(self.proto.eval_metrics)

    @property
    def train_metrics(self) -> pb.TrainMetrics:
        """The latest training progress (step, total_steps, loss, ...)."""
        return self.proto.train_metrics

    @property
    def spec(self) -> pb.JobSpec:
        return self.proto.spec

    def refresh(self) -> "Job":
        """Reads the job from the server again; returns self."""
        resp = self._client._call(self._client._jobs.GetJob,
                                  pb.GetJobRequest(id=self.id))
        self.proto = resp.job
        return self

    def watch(self, after_seq: int = 0,
              timeout: Optional[float] = None) -> Iterator[pb.Event]:
        """Yields the job's events (``lathe.v1.Event``) from ``after_seq`` on,
        as they happen, until the job has finished and every event was sent.

        A dropped connection is dialled again and the stream resumes after
        the last event seen, so no event is lost or repeated. ``timeout``
        (seconds) bounds the whole watch: past it, WaitTimeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last = after_seq
        retry_delay = 0.2
        while True:
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.WaitTimeout(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"job {self.id} still {self.state} after "
                        f"{timeout:g} s")
            stream = self._client._jobs.WatchJob(
                pb.WatchJobRequest(id=self.id, after_seq=last),
                metadata=self._client._metadata, timeout=remaining)
            try:
                for resp in stream:
                    retry_delay = 0.2
                    self.proto = resp.job
                    if resp.HasField("event"):
                        last = resp.event.seq
                        yield resp.event
                return
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and \
                        deadline is not None:
                    continue  # reported above, with the job's state
                if code != grpc.StatusCode.UNAVAILABLE:
                    raise errors.from_rpc_error(e) from None
                # The server restarted or the network dropped: dial again.
                time.sleep(retry_delay)
                retry_delay = min(retry_delay * 2, 5.0)
            finally:
                stream.cancel()

    def wait(self, timeout: Optional[float] = None,
             on_event: Optional[Callable[[pb.Event], None]] = None) -> "Job":
        """Blocks until the job finishes; returns self when it SUCCEEDED.

        Raises JobFailed (with ``.job``) when it FAILED or was CANCELLED,
        and WaitTimeout when ``timeout`` seconds pass first (the job goes
        on). ``on_event`` is called with each event as it arrives.
        """
        for event in self.watch(timeout=timeout):
            if on_event is not None:
                on_event(event)
        if not self.done:
            self.refresh()
        if self.state != "SUCCEEDED":
            raise errors.JobFailed(self)
        return self

    def cancel(self) -> "Job":
        """Cancels the job (a running one is stopped by its worker)."""
        resp = self._client._call(self._client._jobs.CancelJob,
                                  pb.CancelJobRequest(id=self.id))
        self.proto = resp.job
        return self

    def pause(self) -> "Job":
        """Checkpoints a running job and frees its worker until resume()."""
        resp = self._client._call(self._client._jobs.PauseJob,
                                  pb.PauseJobRequest(id=self.id))
        self.proto = resp.job
        return self

    def resume(self) -> "Job":
        """Queues a paused job again; it goes on from its checkpoint."""
        resp = self._client._call(self._client._jobs.ResumeJob,
                                  pb.ResumeJobRequest(id=self.id))
        self.proto = resp.job
        return self

    def checkpoints(self) -> List[pb.Checkpoint]:
        """The job's checkpoints, ordered by step (``best_step`` says which
        scored best: see :meth:`best_step`)."""
        return list(self._checkpoint_list().checkpoints)

    def best_step(self) -> int:
        """The step of the best-scoring checkpoint (0 when none scored)."""
        return self._checkpoint_list().best_step

    def _checkpoint_list(self) -> pb.ListCheckpointsResponse:
        return self._client._call(self._client._jobs.ListCheckpoints,
                                  pb.ListCheckpointsRequest(job_id=self.id))

    def download(self, dest: PathLike,
                 checkpoint: Union[str, int] = "best") -> pb.Checkpoint:
        """Downloads every file of one checkpoint into the folder ``dest``
        and verifies each file's SHA-256; returns the checkpoint.

        ``checkpoint`` is "best" (the best-scoring one, else the latest),
        "latest" or a step number. A partly downloaded file (``NAME.part``)
        is resumed where it stopped; a file already complete and correct is
        not fetched again. A file that does not match its SHA-256 is removed
        and raises DataLoss.
        """
        listing = self._checkpoint_list()
        if not listing.checkpoints:
            raise errors.error_for(grpc.StatusCode.NOT_FOUND,
                                   f"job {self.id} has no checkpoints")
        if checkpoint in ("latest", ""):
            step = listing.checkpoints[-1].step
        elif checkpoint == "best":
            step = listing.best_step or listing.checkpoints[-1].step
        else:
            try:
                step = int(checkpoint)
            except (TypeError, ValueError):
                raise errors.error_for(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "checkpoint: must be 'latest', 'best' or a step number, "
                    f"not {checkpoint!r}") from None
        chosen = next((c for c in listing.checkpoints if c.step == step), None)
        if chosen is None:
            raise errors.error_for(
                grpc.StatusCode.NOT_FOUND,
                f"job {self.id} has no checkpoint at step {step}")
        dest = os.fspath(dest)
        os.makedirs(dest, exist_ok=True)
        for f in chosen.files:
            # Never trust a name to stay inside dest without checking.
            if not _clean_relative(f.name):
                raise errors.error_for(grpc.StatusCode.DATA_LOSS,
                                       f"unsafe file name {f.name!r}")
            self._download_file(str(chosen.step), f, dest)
        return chosen

    def _download_file(self, step: str, info: pb.FileInfo, dest: str) -> None:
        path = os.path.join(dest, *info.name.split("/"))
        part = path + ".part"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.isfile(path) and _sha256_file(path) == info.sha256:
            return
        offset = 0
        if os.path.isfile(part) and os.path.getsize(part) <= info.size:
            offset = os.path.getsize(part)
        elif os.path.exists(part):
            os.unlink(part)
        if offset < info.size or info.size == 0:
            req = pb.DownloadCheckpointFileRequest(
                job_id=self.id, checkpoint=step, file=info.name,
                offset=offset)
            stream = self._client._jobs.DownloadCheckpointFile(
                req, metadata=self._client._metadata)
            try:
                with open(part, "ab") as out:
                    for resp in stream:
                        if resp.data:
                            out.write(resp.data)
            except grpc.RpcError as e:
                raise errors.from_rpc_error(e) from None
        got = _sha256_file(part)
        if got != info.sha256:
            os.unlink(part)
            raise errors.error_for(
                grpc.StatusCode.DATA_LOSS,
                f"{info.name}: SHA-256 {got} does not match the server's "
                f"{info.sha256}; the file was removed, download again")
        os.replace(part, path)


class Datasets:
    """The team's uploaded datasets (``client.datasets``)."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    def upload(self, path: PathLike, name: Optional[str] = None) -> pb.Dataset:
        """Uploads a local file, or a folder (sent as one tar archive, as the
        CLI does: image class folders, audio folders), and returns the
        stored dataset; ``dataset.ref`` ("dataset:SHA256") goes into a job.
        Uploading the same bytes again returns the same ref."""
        path = os.fspath(path).rstrip("/") or "/"
        if not os.path.exists(path):
            raise errors.error_for(grpc.StatusCode.NOT_FOUND,
                                   f"{path}: no such file or folder")
        base = os.path.basename(path)
        if os.path.isdir(path):
            with tempfile.TemporaryDirectory(prefix="lathe-folder-") as tmp:
                tar = os.path.join(tmp, base + ".tar")
                _write_tar(path, tar)
                return self._upload_file(tar, name or base + ".tar")
        return self._upload_file(path, name or base)

    def _upload_file(self, path: str, name: str) -> pb.Dataset:
        def chunks() -> Iterator[pb.UploadDatasetRequest]:
            with open(path, "rb") as f:
                first = True
                while True:
                    b = f.read(_CHUNK)
                    if not b and not first:
                        return
                    yield pb.UploadDatasetRequest(name=name if first else "",
                                                  chunk=b)
                    first = False
        resp = self._client._call(self._client._datasets.UploadDataset,
                                  chunks())
        return resp.dataset

    def list(self) -> List[pb.Dataset]:
        """The team's datasets, newest first."""
        return list(self._client._call(self._client._datasets.ListDatasets,
                                       pb.ListDatasetsRequest()).datasets)

    def get(self, ref: str) -> pb.Dataset:
        return self._client._call(self._client._datasets.GetDataset,
                                  pb.GetDatasetRequest(ref=ref)).dataset

    def delete(self, ref: str) -> pb.Dataset:
        return self._client._call(self._client._datasets.DeleteDataset,
                                  pb.DeleteDatasetRequest(ref=ref)).dataset


def _write_tar(folder: str, tar_path: str) -> None:
    """Every regular file under `folder`, sorted by path, names relative to
    it (symbolic links and special files are left out)."""
    files: List[Tuple[str, str]] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for n in names:
            full = os.path.join(root, n)
            if os.path.isfile(full) and not os.path.islink(full):
                files.append((os.path.relpath(full, folder).replace(os.sep, "/"),
                              full))
    files.sort()
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for rel, full in files:
            tar.add(full, arcname=rel, recursive=False)


class Models:
    """The server's model store (``client.models``)."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    def push(self, folder: PathLike, name: str,
             replace: bool = False) -> pb.Model:
        """Stores a model folder in Hugging Face layout (config.json,
        weights, tokenizer files) as ``name``; jobs then name it as their
        model. A checkpoint's training state and TensorBoard log are left
        out. ALREADY_EXISTS
        when ``name`` holds other content and ``replace`` is false."""
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise errors.error_for(grpc.StatusCode.NOT_FOUND,
                                   f"{folder} is not a directory")
        files: List[Tuple[pb.ModelFile, str]] = []
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            for n in names:
                full = os.path.join(root, n)
                if not os.path.isfile(full) or os.path.islink(full):
                    continue
                rel = os.path.relpath(full, folder).replace(os.sep, "/")
                if rel in ("trainer_state.json", "training_state.safetensors") \
                        or rel.startswith("runs/"):
                    continue  # a checkpoint's training state and log
                files.append((pb.ModelFile(path=rel,
                                           size=os.path.getsize(full),
                                           sha256=_sha256_file(full)), full))
        files.sort(key=lambda x: x[0].path)

        def messages() -> Iterator[pb.PushModelRequest]:
            yield pb.PushModelRequest(name=name, replace=replace)
            for info, full in files:
                with open(full, "rb") as f:
                    first = True
                    while True:
                        b = f.read(_CHUNK)
                        if not b and not first:
                            break
                        msg = pb.PushModelRequest(chunk=b)
                        if first:
                            msg.file.CopyFrom(info)
                        first = False
                        yield msg
        return self._client._call(self._client._models.PushModel,
                                  messages()).model

    def list(self) -> List[pb.Model]:
        """Stored models, sorted by name (``presets()`` lists the presets)."""
        return list(self._client._call(self._client._models.ListModels,
                                       pb.ListModelsRequest()).models)

    def presets(self) -> List[pb.ModelPreset]:
        return list(self._client._call(self._client._models.ListModels,
                                       pb.ListModelsRequest()).presets)

    def get(self, name: str) -> pb.Model:
        return self._client._call(self._client._models.GetModel,
                                  pb.GetModelRequest(name=name)).model

    def delete(self, name: str) -> pb.Model:
        return self._client._call(self._client._models.DeleteModel,
                                  pb.DeleteModelRequest(name=name)).model


class Client:
    """A connection to a Lathe server.

    Args:
        server: HOST:PORT of the gRPC listener (default ``$LATHE_SERVER``,
            else 127.0.0.1:50051).
        token: the bearer token (default ``$LATHE_TOKEN``, else the file
            ``lathe login`` wrote).
        token_file: read the token from this file instead (mode 0600).
        tls_ca: PEM file to verify the server against (default
            ``$LATHE_TLS_CA``); without it (and without a client
            certificate) the connection is plain TCP, which the server
            allows on loopback only unless told otherwise.
        tls_cert, tls_key: a client certificate for mTLS (default
            ``$LATHE_TLS_CERT``, ``$LATHE_TLS_KEY``).
        timeout: seconds allowed for each unary call (default 120).
    """

    def __init__(self, server: Optional[str] = None,
                 token: Optional[str] = None,
                 tls_ca: Optional[str] = None,
                 tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None,
                 token_file: Optional[str] = None,
                 timeout: float = 120.0) -> None:
        self.server = server or os.environ.get("LATHE_SERVER") or DEFAULT_SERVER
        if token is None:
            if token_file:
                token = _read_token_file(token_file)
            elif os.environ.get("LATHE_TOKEN"):
                token = os.environ["LATHE_TOKEN"].strip()
            elif os.path.exists(_login_token_file()):
                token = _read_token_file(_login_token_file())
        self._metadata: Sequence[Tuple[str, str]] = (
            (("authorization", "Bearer " + token),) if token else ())
        ca = _read_bytes("tls_ca", tls_ca or os.environ.get("LATHE_TLS_CA"))
        cert = _read_bytes("tls_cert",
                           tls_cert or os.environ.get("LATHE_TLS_CERT"))
        key = _read_bytes("tls_key", tls_key or os.environ.get("LATHE_TLS_KEY"))
        if bool(cert) != bool(key):
            raise errors.error_for(
                grpc.StatusCode.INVALID_ARGUMENT,
                "tls_cert: a client certificate needs both tls_cert and "
                "tls_key")
        if ca or cert:
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=cert)
            self._channel = grpc.secure_channel(self.server, creds,
                                                options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(self.server,
                                                  options=_CHANNEL_OPTIONS)
        self.timeout = timeout
        self._jobs = pb_grpc.JobServiceStub(self._channel)
        self._datasets = pb_grpc.DatasetServiceStub(self._channel)
        self._models = pb_grpc.ModelServiceStub(self._channel)
        self._admin = pb_grpc.AdminServiceStub(self._channel)
        self.datasets = Datasets(self)
        self.models = Models(self)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, metadata=self._metadata,
                          timeout=self.timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    def whoami(self) -> pb.WhoAmIResponse:
        """The token's user, team and role."""
        return self._call(self._admin.WhoAmI, pb.WhoAmIRequest())

    def _data_ref(self, field: str, value: Optional[PathLike]) -> str:
        if value is None:
            return ""
        value = os.fspath(value)
        if value == "" or value.startswith(("dataset:", "file://", "s3://",
                                            "https://", "http://")):
            return value
        if not os.path.exists(value):
            raise errors.error_for(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{field}: {value!r} is neither a local file or folder, a "
                "dataset: reference nor a URI")
        return self.datasets.upload(value).ref

    def submit(self, task: str, model: str,
               train_data: PathLike,
               validation_data: Optional[PathLike] = None,
               params: Optional[Mapping[str, Any]] = None,
               device: str = "",
               owner: str = "",
               labels: Optional[Mapping[str, str]] = None,
               priority: int = 0,
               max_attempts: int = 0,
               devices: int = 0,
               request_id: str = "",
               webhooks: Sequence[str] = ()) -> Job:
        """Submits a fine-tuning job and returns it (QUEUED).

        ``train_data`` and ``validation_data`` are local files or folders
        (uploaded first, as the CLI does), ``dataset:`` references or URIs.
        ``params`` are hyperparameters by name (docs/params.md); values may
        be numbers or booleans. ``request_id`` makes a retried submit return
        the first job instead of a second one. ``webhooks`` are URLs the
        server POSTs signed notices to on state changes and new best
        checkpoints (docs/webhooks.md).
        """
        spec = pb.JobSpec(task=task, model=model, device=device, owner=owner,
                          priority=priority, max_attempts=max_attempts)
        for k, v in (params or {}).items():
            spec.params[k] = _param_text(v)
        for k, v in (labels or {}).items():
            spec.labels[k] = str(v)
        if devices:
            spec.resources.device_count = devices
        spec.webhooks.extend(webhooks)
        spec.train_data = self._data_ref("train_data", train_data)
        spec.validation_data = self._data_ref("validation_data",
                                              validation_data)
        resp = self._call(self._jobs.SubmitJob,
                          pb.SubmitJobRequest(spec=spec,
                                              request_id=request_id))
        return Job(self, resp.job)

    def job(self, job_id: str) -> Job:
        """The job with this id (NotFound when it does not exist)."""
        return Job(self, self._call(self._jobs.GetJob,
                                    pb.GetJobRequest(id=job_id)).job)

    def jobs(self, states: Iterable[str] = (), owner: str = "",
             limit: Optional[int] = None) -> Iterator[Job]:
        """Jobs newest first, page by page, optionally only in ``states``
        ("RUNNING", ...) or of one ``owner``; at most ``limit``."""
        req = pb.ListJobsRequest(owner=owner, page_size=100)
        for s in states:
            req.states.append(pb.JobState.Value(s))
        count = 0
        while True:
            resp = self._call(self._jobs.ListJobs, req)
            for j in resp.jobs:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield Job(self, j)
            if not resp.next_page_token:
                return
            req.page_token = resp.next_page_token

    def predict(self, model: str, input: PathLike, task: str = "",
                params: Optional[Mapping[str, Any]] = None,
                device: str = "",
                timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """Runs ``model`` ("job:ID", a stored model, a preset) on the rows of
        ``input`` (a local file or a dataset reference) as a prediction job
        and returns one dict per row (``label``, ``text``, scores...).
        ``task`` may be left out for a ``job:ID`` model."""
        if not task:
            if not model.startswith("job:"):
                raise errors.error_for(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "task: needed for a model that is not job:ID")
            task = self.job(model[4:].split("@")[0]).spec.task
        spec = pb.JobSpec(task=task, model=model, device=device,
                          kind=pb.JOB_KIND_PREDICT, max_attempts=1)
        for k, v in (params or {}).items():
            spec.params[k] = _param_text(v)
        spec.train_data = self._data_ref("input", input)
        job = Job(self, self._call(self._jobs.SubmitJob,
                                   pb.SubmitJobRequest(spec=spec)).job)
        job.wait(timeout=timeout)
        with tempfile.TemporaryDirectory(prefix="lathe-predict-") as tmp:
            job.download(tmp, checkpoint="latest")
            with open(os.path.join(tmp, "predictions.jsonl"), "r",
                      encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
