"""The Python client against a real lathe-server (one local worker): jobs
submitted from local files, followed, waited on and downloaded; a watch
that survives a dropped connection; errors as exceptions with the gRPC code
and the field; datasets, models and predictions."""

import hashlib
import json
import os
import subprocess

import grpc
import pytest
from conftest import PARAMS

def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_defaults_come_from_the_environment(lathe_pkg, server, monkeypatch):
    lathe = lathe_pkg["module"]
    monkeypatch.setenv("LATHE_SERVER", server.grpc)
    monkeypatch.setenv("LATHE_TOKEN", server.admin_token)
    with lathe.Client() as c:
        assert c.server == server.grpc
        assert c.whoami().user.role == lathe.pb.ROLE_ADMIN


def test_a_job_runs_to_the_end_and_reports_its_metrics(finished):
    job, events = finished
    assert job.state == "SUCCEEDED" and job.done and job.error == ""
    metrics = job.eval_metrics
    assert isinstance(metrics, dict)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1
    states = [e.state for e in events if e.type == 1]  # EVENT_TYPE_STATE
    assert states[-1] == 3  # SUCCEEDED
    assert any(e.type == 5 for e in events)  # a checkpoint event
    assert job.train_metrics.step == job.train_metrics.total_steps > 0


def test_download_verifies_resumes_and_refuses_bad_bytes(finished, scratch,
                                                         lathe_pkg):
    lathe = lathe_pkg["module"]
    job, _ = finished
    cps = job.checkpoints()
    assert cps and cps[-1].final
    dest = os.path.join(scratch, "model")
    cp = job.download(dest, checkpoint="best")
    assert cp.step in (job.best_step(), cps[-1].step)
    names = {f.name for f in cp.files}
    assert "config.json" in names
    for f in cp.files:
        assert sha256(os.path.join(dest, f.name)) == f.sha256
    big = max(cp.files, key=lambda f: f.size)
    path = os.path.join(dest, big.name)
    whole = open(path, "rb").read()
    # A file cut short as a .part: the download goes on from where it stopped.
    os.unlink(path)
    with open(path + ".part", "wb") as out:
        out.write(whole[: len(whole) // 3])
    job.download(dest, checkpoint=cp.step)
    assert open(path, "rb").read() == whole
    assert not os.path.exists(path + ".part")
    # A .part of the right size with the wrong bytes: refused and removed.
    os.unlink(path)
    with open(path + ".part", "wb") as out:
        out.write(b"\0" * len(whole))
    with pytest.raises(lathe.DataLoss) as e:
        job.download(dest, checkpoint=cp.step)
    assert e.value.code == grpc.StatusCode.DATA_LOSS
    assert big.name in e.value.message
    assert not os.path.exists(path + ".part") and not os.path.exists(path)
    job.download(dest, checkpoint="latest")
    assert sha256(path) == big.sha256
    with pytest.raises(lathe.InvalidArgument) as e:
        job.download(dest, checkpoint="newest")
    assert e.value.field == "checkpoint"


def test_watch_resumes_after_the_connection_drops(lathe_pkg, server, data):
    """Every connection through a relay is cut after the third event; the
    watch dials again and goes on after the last event it saw: no event is
    lost or repeated."""
    from conftest import Relay
    lathe = lathe_pkg["module"]
    relay = Relay(server.grpc)
    c = lathe.Client(server=relay.address, token=server.admin_token)
    job = c.submit(task="text-classification", model="preset:bert-tiny",
                   train_data=data["train"], params=dict(PARAMS, epochs=2))
    seen = []
    for event in job.watch(timeout=300):
        seen.append(event.seq)
        if len(seen) == 3:
            relay.drop()
    assert relay.drops == 1
    assert relay.accepted >= 2  # the client dialled again after the cut
    assert job.state == "SUCCEEDED"
    everything = [e.seq for e in lathe.Client(
        server=server.grpc, token=server.admin_token).job(job.id).watch()]
    assert seen == everything
    c.close()
    relay.close()


def test_errors_carry_the_code_and_the_field(lathe_pkg, client, server, data,
                                             scratch):
    lathe = lathe_pkg["module"]
    with pytest.raises(lathe.InvalidArgument) as e:
        client.submit(task="no-such-task", model="preset:bert-tiny",
                      train_data=data["train"])
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.field == "spec.task", e.value.message
    with pytest.raises(lathe.InvalidArgument) as e:
        client.submit(task="text-classification", model="preset:bert-tiny",
                      train_data=os.path.join(scratch, "missing.jsonl"))
    assert e.value.field == "train_data"
    # A URI goes to the server as it is, which fetches only from the hosts
    # it was told it may call (none here) and names the host it refused.
    with pytest.raises(lathe.InvalidArgument) as e:
        client.submit(task="text-classification", model="preset:bert-tiny",
                      train_data="https://198.51.100.7/train.jsonl")
    assert e.value.field == "spec.train_data", e.value.message
    assert "198.51.100.7 is not allowed" in e.value.message
    with pytest.raises(lathe.NotFound):
        client.job("j-does-not-exist")
    with pytest.raises(lathe.Unauthenticated):
        lathe.Client(server=server.grpc, token="not-a-token").job("x")
    with pytest.raises(lathe.Unavailable):
        lathe.Client(server="127.0.0.1:1", token="t", timeout=5).job("x")
    # A job whose data is broken fails, naming the file and line.
    bad = os.path.join(scratch, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"text": "fine", "label": "0"}\n{"text": oops\n')
    job = client.submit(task="text-classification", model="preset:bert-tiny",
                        train_data=bad, params={"epochs": 1})
    with pytest.raises(lathe.JobFailed) as e:
        job.wait(timeout=300)
    assert e.value.job.state == "FAILED"
    assert "bad.jsonl" in e.value.job.error and "2" in e.value.job.error
    # A wait that runs out of time leaves the job running.
    slow = client.submit(task="text-classification", model="preset:bert-tiny",
                         train_data=data["train"], params={"epochs": 50})
    with pytest.raises(lathe.WaitTimeout):
        slow.wait(timeout=1)
    assert not slow.refresh().done
    assert slow.cancel().state in ("CANCELLING", "CANCELLED")


def test_datasets_models_and_predictions(lathe_pkg, client, finished, data,
                                         scratch):
    lathe = lathe_pkg["module"]
    job, _ = finished
    a = client.datasets.upload(data["valid"])
    b = client.datasets.upload(data["valid"], name="again.jsonl")
    assert a.ref == b.ref and a.ref.startswith("dataset:")
    assert a.sha256 == sha256(data["valid"])
    assert a.ref in {d.ref for d in client.datasets.list()}
    assert client.datasets.get(a.ref).size == os.path.getsize(data["valid"])
    dest = os.path.join(scratch, "to-push")
    job.download(dest)
    model = client.models.push(dest, "py-test-model")
    assert model.name == "py-test-model"
    # A checkpoint's training state and TensorBoard log are not model files.
    paths = {f.path for f in model.files}
    assert "config.json" in paths and os.path.isdir(os.path.join(dest, "runs"))
    assert not any(p.startswith("runs/") or p == "trainer_state.json"
                   for p in paths), paths
    assert "py-test-model" in {m.name for m in client.models.list()}
    assert any(p.name == "preset:bert-tiny" for p in client.models.presets())
    with pytest.raises(lathe.NotFound):
        client.models.get("no-such-model")
    rows = client.predict(f"job:{job.id}", data["valid"], timeout=300)
    assert len(rows) == 32
    assert all(r["label"] in ("0", "1") for r in rows)
    stored = client.predict("py-test-model", data["valid"],
                            task="text-classification", timeout=300)
    assert [r["label"] for r in stored] == [r["label"] for r in rows]
    assert client.models.delete("py-test-model").name == "py-test-model"


def test_the_docs_example_pipeline_runs(lathe_pkg, server, data, scratch):
    """The example pipeline in docs/python.md, run as a user would."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    doc = open(os.path.join(root, "docs", "python.md")).read()
    code = doc.split("<!-- example -->", 1)[1].split("```python", 1)[1]
    code = code.split("```", 1)[0]
    work = os.path.join(scratch, "pipeline")
    os.makedirs(work, exist_ok=True)
    for name in ("train", "valid"):
        with open(data[name], "rb") as src, \
                open(os.path.join(work, name + ".jsonl"), "wb") as dst:
            dst.write(src.read())
    script = os.path.join(work, "pipeline.py")
    with open(script, "w") as f:
        f.write(code)
    env = dict(os.environ, LATHE_SERVER=server.grpc,
               LATHE_TOKEN=server.admin_token)
    r = subprocess.run([lathe_pkg["python"], script], cwd=work, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "accuracy" in r.stdout
    assert os.path.isfile(os.path.join(work, "model", "config.json"))
