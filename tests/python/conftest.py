"""Fixtures for the Python client's tests: the package installed as
docs/python.md says (a virtual environment over Debian's packages, pip with
no package index), a real lathe-server on loopback with one local worker,
and a TCP relay that can drop every connection through it.

Run by CTest (python_client) as
    /usr/bin/python3 -m pytest tests/python --server-bin PATH --cli-bin PATH
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import random

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def pytest_addoption(parser):
    parser.addoption("--server-bin", required=True)
    parser.addoption("--cli-bin", required=True)


@pytest.fixture(scope="session")
def scratch():
    d = tempfile.mkdtemp(prefix="lathe-python-test-",
                         dir=os.environ.get("TEST_TMPDIR"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def install_commands(venv):
    """The install commands of docs/python.md, for a venv at `venv`."""
    doc = open(os.path.join(ROOT, "docs", "python.md"), encoding="utf-8").read()
    block = doc.split("<!-- install -->", 1)[1].split("```sh", 1)[1]
    block = block.split("```", 1)[0]
    lines = [l.strip() for l in block.strip().splitlines()
             if l.strip() and not l.strip().startswith("#")]
    return [l.replace(".venv", venv) for l in lines]


@pytest.fixture(scope="session")
def lathe_pkg(scratch):
    """Installs client/python with docs/python.md's commands (from a copy of
    the repository's client/python, so that the build leaves nothing in the
    source tree) and imports `lathe` from that install."""
    work = os.path.join(scratch, "repo")
    shutil.copytree(os.path.join(ROOT, "client", "python"),
                    os.path.join(work, "client", "python"),
                    ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                  "__pycache__"))
    venv = os.path.join(scratch, "venv")
    for cmd in install_commands(venv):
        r = subprocess.run(cmd, shell=True, cwd=work, capture_output=True,
                           text=True, env=dict(os.environ, PIP_NO_INDEX="1"))
        assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    py = os.path.join(venv, "bin", "python")
    site = subprocess.run(
        [py, "-c", "import lathe, os; print(os.path.dirname(os.path.dirname(lathe.__file__)))"],
        capture_output=True, text=True, check=True, cwd=scratch).stdout.strip()
    assert site.startswith(venv), f"lathe imported from {site}, not the venv"
    sys.path.insert(0, site)
    import lathe
    assert lathe.__file__.startswith(venv)
    return {"module": lathe, "python": py}


class Server:
    def __init__(self, bin_path, data_dir):
        self.data_dir = data_dir
        self.log = os.path.join(data_dir + ".log")
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [bin_path, "--data-dir", data_dir, "--listen", "127.0.0.1:0",
                 "--metrics-listen", "127.0.0.1:0", "--local-workers", "1"],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        info = None
        while time.time() < deadline:
            assert self.proc.poll() is None, \
                f"lathe-server exited:\n{self.log_tail()}"
            try:
                with open(os.path.join(data_dir, "server.json")) as f:
                    info = json.load(f)
                if info.get("grpc"):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        assert info and info.get("grpc"), "no server.json after 60 s"
        self.grpc = info["grpc"]
        self.metrics = info.get("metrics", "")
        with open(os.path.join(data_dir, "admin.token")) as f:
            self.admin_token = f.read().strip()

    def log_tail(self, n=20):
        try:
            return "".join(open(self.log).readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def server(request, scratch):
    s = Server(request.config.getoption("--server-bin"),
               os.path.join(scratch, "server"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def cli(request):
    return request.config.getoption("--cli-bin")


class Relay:
    """A TCP relay to `target`; drop() closes every connection through it
    (the listener stays, so clients can dial again)."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        self.drops = 0
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            with self.lock:
                self.conns += [c, s]
                self.accepted += 1
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pump, args=(a, b),
                                 daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self):
        with self.lock:
            conns, self.conns = self.conns, []
            self.drops += 1
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def close(self):
        self.sock.close()
        self.drop()


WORDS_A = "refund invoice urgent winner prize claim cash offer".split()
WORDS_B = "meeting agenda notes lunch review schedule draft team".split()


def rows(n, seed):
    """Short texts, label 1 when they are built from WORDS_A."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        words = WORDS_A if label else WORDS_B
        out.append({"text": " ".join(rng.choice(words) for _ in range(6)),
                    "label": str(label)})
    return out


def write_jsonl(path, items):
    with open(path, "w") as f:
        for r in items:
            f.write(json.dumps(r) + "\n")
    return path


PARAMS = {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3,
          "max_seq_length": 16, "seed": 7}


@pytest.fixture(scope="session")
def data(scratch):
    d = os.path.join(scratch, "data")
    os.makedirs(d, exist_ok=True)
    return {"train": write_jsonl(os.path.join(d, "train.jsonl"), rows(96, 1)),
            "valid": write_jsonl(os.path.join(d, "valid.jsonl"), rows(32, 2))}


@pytest.fixture(scope="session")
def client(lathe_pkg, server):
    c = lathe_pkg["module"].Client(server=server.grpc, token=server.admin_token)
    yield c
    c.close()


@pytest.fixture(scope="session")
def finished(client, data):
    """One job run to the end; the events seen while waiting."""
    job = client.submit(task="text-classification", model="preset:bert-tiny",
                        train_data=data["train"], validation_data=data["valid"],
                        params=PARAMS)
    assert job.state == "QUEUED" and job.id
    events = []
    job.wait(timeout=300, on_event=events.append)
    return job, events
