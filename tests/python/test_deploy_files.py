"""The Compose and Kubernetes files in deploy/, checked offline:

- deploy/compose/docker-compose.yml by Debian's docker-compose (`config`,
  which validates the file against the Compose schema without a Docker
  engine), and what it wires: TLS and tokens, the GPU reservation, the
  monitoring files;
- deploy/kubernetes rendered by `kubectl kustomize`, every object checked
  against the Kubernetes and Prometheus Operator object schemas
  (k8s_schema_check.mjs, with the npm packages ./run installs into
  .cache/npm-k8s), unknown fields included;
- a misspelled field is refused in both;
- every flag the files pass exists, and the server, its health check and a
  CPU worker run with the very arguments the files give them, on
  certificates made by docs/deploy.md's commands.

Run by CTest deploy_files, with /usr/bin/python3.
"""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest
import yaml
from conftest import ROOT

DOCKER_COMPOSE = "/usr/bin/docker-compose"
# Debian's kubernetes-client, or a kubectl ./run found installed already.
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
NODE = shutil.which("node") or "/usr/bin/node"
NPM_MODULES = os.path.join(ROOT, ".cache", "npm-k8s", "node_modules")
COMPOSE = os.path.join(ROOT, "deploy", "compose", "docker-compose.yml")
KUSTOMIZE_DIR = os.path.join(ROOT, "deploy", "kubernetes")
SCHEMA_CHECK = os.path.join(os.path.dirname(__file__), "k8s_schema_check.mjs")
DOC = os.path.join(ROOT, "docs", "deploy.md")


def need(path, what):
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: {what} (`./run setup` installs it)")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ---- Compose ----

def compose_config(path, scratch, *extra):
    need(DOCKER_COMPOSE, "Debian package docker-compose")
    # No engine is needed or asked for: `config` only reads the file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    return run([DOCKER_COMPOSE, "-f", path, *extra, "config"], cwd=scratch,
               env=env)


@pytest.fixture(scope="module")
def compose(scratch):
    r = compose_config(COMPOSE, scratch, "--profile", "gpu", "--profile",
                       "cpu")
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def flag_values(args, name):
    return [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]


def published_port(p):
    """(host address or "", host port) of a port in `config`'s output, which
    writes some in the long form and some as HOST:PUBLISHED:TARGET/PROTO."""
    if isinstance(p, dict):
        return p.get("host_ip", ""), int(p["published"])
    parts = p.split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else ""), int(parts[-2])


def bind_mounts(service):
    """Target -> host path of a service's bind mounts (read-only ones:
    every file the deploy mounts from the repository is mounted :ro)."""
    mounts = {}
    for v in service["volumes"]:
        src, target, mode = v.split(":")
        if src.startswith("/"):
            assert mode == "ro", v
            mounts[target] = src
    return mounts


def test_compose_file_is_valid_and_wires_tls_tokens_gpus_and_monitoring(
        compose, scratch):
    r = compose_config(COMPOSE, scratch)
    assert r.returncode == 0, r.stderr
    services = compose["services"]
    assert set(services) == {"lathe-server", "lathe-worker-gpu",
                             "lathe-worker-cpu", "prometheus", "grafana"}
    server = services["lathe-server"]
    assert server["build"]["context"] == ROOT
    assert server["build"]["dockerfile"] == "Dockerfile"
    args = server["command"]
    assert "--insecure" not in " ".join(args)
    assert flag_values(args, "tls-cert") == ["/run/secrets/lathe-server-cert"]
    assert flag_values(args, "tls-key") == ["/run/secrets/lathe-server-key"]
    assert flag_values(args, "metrics-listen")[0].startswith("127.0.0.1:")
    assert flag_values(args, "http-listen") == ["0.0.0.0:8443"]
    # Published: gRPC and HTTPS (both TLS), Grafana on the host's loopback.
    published = {published_port(p) for p in server["ports"]}
    assert published == {("", 50051), ("", 8443), ("127.0.0.1", 3000)}
    assert "whoami" in server["healthcheck"]["test"]

    secrets = set(compose["secrets"])
    for name, svc in services.items():
        for s in svc.get("secrets", []):
            assert s["source"] in secrets, (name, s)
    for name, device in (("lathe-worker-gpu", "cuda:0"),
                         ("lathe-worker-cpu", "cpu")):
        w = services[name]
        assert w["entrypoint"] == ["lathe-worker"]
        assert flag_values(w["command"], "device") == [device]
        assert flag_values(w["command"], "server") == ["lathe-server:50051"]
        assert flag_values(w["command"], "tls-ca") == ["/run/secrets/lathe-ca"]
        assert flag_values(w["command"], "token-file") == [
            "/run/secrets/lathe-worker-token"]
        assert {s["source"] for s in w["secrets"]} == {"lathe-ca",
                                                       "lathe-worker-token"}
        assert w["depends_on"]["lathe-server"]["condition"] == "service_healthy"
    assert services["lathe-worker-gpu"]["profiles"] == ["gpu"]
    assert services["lathe-worker-cpu"]["profiles"] == ["cpu"]
    devices = services["lathe-worker-gpu"]["deploy"]["resources"][
        "reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1,
                        "capabilities": ["gpu"]}]

    prom = services["prometheus"]
    assert prom["network_mode"] == "service:lathe-server"
    mounts = bind_mounts(prom)
    prom_dir = os.path.join(ROOT, "deploy", "prometheus")
    assert mounts["/etc/prometheus/prometheus.yml"] == os.path.join(
        prom_dir, "prometheus.yml")
    assert mounts["/etc/prometheus/alerts.yml"] == os.path.join(
        prom_dir, "alerts.yml")
    # The scrape target is the server's loopback exporter.
    prom_cfg = yaml.safe_load(open(os.path.join(prom_dir, "prometheus.yml")))
    targets = prom_cfg["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [flag_values(args, "metrics-listen")[0]]
    assert "--web.listen-address=127.0.0.1:9090" in prom["command"]

    graf = services["grafana"]
    mounts = bind_mounts(graf)
    assert mounts["/var/lib/grafana/dashboards/lathe.json"] == os.path.join(
        ROOT, "deploy", "grafana", "lathe.json")
    assert mounts["/etc/grafana/provisioning/dashboards"] == os.path.join(
        ROOT, "deploy", "grafana", "provisioning", "dashboards")
    ds = yaml.safe_load(open(mounts[
        "/etc/grafana/provisioning/datasources/lathe.yml"]))
    assert ds["datasources"][0]["url"] == "http://127.0.0.1:9090"
    assert graf["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == \
        "/run/secrets/grafana-admin-password"


@pytest.mark.parametrize("good,bad,message", [
    ("    healthcheck:", "    healthchek:", "'healthchek'"),
    ("          devices:", "          device:", "'device'"),
    ("              capabilities: [gpu]", "              capabilitiez: [gpu]",
     "'capabilitiez'"),
])
def test_compose_refuses_a_misspelled_field(scratch, good, bad, message):
    text = open(COMPOSE).read()
    assert text.count(good) == 1, good
    copy_path = os.path.join(scratch, "compose-typo.yml")
    with open(copy_path, "w") as f:
        f.write(text.replace(good, bad))
    r = compose_config(copy_path, scratch)
    assert r.returncode != 0, f"{bad.strip()} was accepted"
    assert message in r.stderr, r.stderr


# ---- Kubernetes ----

def render():
    need(KUBECTL, "kubectl (Debian package kubernetes-client)")
    r = run([KUBECTL, "kustomize", KUSTOMIZE_DIR])
    assert r.returncode == 0, r.stderr
    return [o for o in yaml.safe_load_all(r.stdout) if o]


def schema_check(objects, scratch):
    need(NODE, "Debian package nodejs")
    for pkg in ("kubernetes-models", "@kubernetes-models/prometheus-operator",
                "typescript"):
        need(os.path.join(NPM_MODULES, pkg, "package.json"),
             f"npm package {pkg}")
    path = os.path.join(scratch, "k8s-objects.json")
    with open(path, "w") as f:
        json.dump(objects, f)
    return run([NODE, SCHEMA_CHECK, NPM_MODULES, path])


@pytest.fixture(scope="module")
def rendered():
    return render()


def find(objects, kind, name):
    found = [o for o in objects
             if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def test_kubernetes_files_render_and_match_the_schemas(rendered, scratch):
    r = schema_check(rendered, scratch)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok ") == len(rendered)

    # No secret material: the secrets are referenced by name only (the one
    # Secret here is a service account token that Kubernetes fills in).
    secrets = [o for o in rendered if o["kind"] == "Secret"]
    assert [s["type"] for s in secrets] == [
        "kubernetes.io/service-account-token"]
    assert not any("data" in s or "stringData" in s for s in secrets)

    sts = find(rendered, "StatefulSet", "lathe-server")
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pod = sts["spec"]["template"]["spec"]
    server = pod["containers"][0]
    args = server["args"]
    assert "--insecure" not in " ".join(args)
    assert flag_values(args, "metrics-listen")[0].startswith("127.0.0.1:")
    assert flag_values(args, "tls-cert") and flag_values(args, "tls-key")
    assert {m["mountPath"] for m in server["volumeMounts"]} >= {
        "/var/lib/lathe"}
    assert "whoami" in server["readinessProbe"]["exec"]["command"]
    assert server["livenessProbe"] and server["startupProbe"]
    secret_names = {v["secret"]["secretName"] for v in pod["volumes"]
                    if "secret" in v}
    assert secret_names == {"lathe-tls", "lathe-ca"}
    # No fsGroup: it would make admin.token group-readable, which the CLI
    # (the readiness probe) refuses.
    assert "fsGroup" not in pod.get("securityContext", {})
    proxy = pod["containers"][1]
    assert "--upstream=http://" + flag_values(args, "metrics-listen")[0] + \
        "/" in proxy["args"]

    svc = find(rendered, "Service", "lathe-server")
    assert sts["spec"]["serviceName"] == "lathe-server"
    assert {p["name"] for p in svc["spec"]["ports"]} == {"grpc", "https",
                                                         "metrics"}

    dep = find(rendered, "Deployment", "lathe-worker")
    worker = dep["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert flag_values(worker["args"], "server") == ["lathe-server:50051"]
    assert flag_values(worker["args"], "tls-ca")
    assert flag_values(worker["args"], "token-file")
    token_vol = [v for v in dep["spec"]["template"]["spec"]["volumes"]
                 if v.get("secret", {}).get("secretName") ==
                 "lathe-worker-token"]
    assert token_vol and token_vol[0]["secret"]["defaultMode"] == 0o400

    sm = find(rendered, "ServiceMonitor", "lathe-server")
    ep = sm["spec"]["endpoints"][0]
    assert ep["port"] == "metrics" and ep["scheme"] == "https"
    assert ep["tlsConfig"]["ca"]["secret"]["name"] == "lathe-ca"
    rule = find(rendered, "PrometheusRule", "lathe")
    alerts = yaml.safe_load(open(os.path.join(ROOT, "deploy", "prometheus",
                                              "alerts.yml")))
    # Compared with white space collapsed: kustomize may rewrite a folded
    # string's line breaks, which PromQL and the alert text do not mind.
    assert squeeze(rule["spec"]["groups"]) == squeeze(alerts["groups"])
    for o in rendered:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == "lathe", o["metadata"]


def squeeze(value):
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list):
        return [squeeze(v) for v in value]
    if isinstance(value, dict):
        return {k: squeeze(v) for k, v in value.items()}
    return value


def misspell(objects, kind, name, edit):
    objects = copy.deepcopy(objects)
    edit(find(objects, kind, name))
    return objects


def rename(d, old, new):
    d[new] = d.pop(old)


@pytest.mark.parametrize("kind,name,edit,field", [
    ("StatefulSet", "lathe-server",
     lambda o: rename(o["spec"], "volumeClaimTemplates",
                      "volumeClaimTemplate"), "volumeClaimTemplate"),
    ("Deployment", "lathe-worker",
     lambda o: rename(o["spec"]["template"]["spec"]["containers"][0]
                      ["resources"], "limits", "limit"), "limit"),
    ("StatefulSet", "lathe-server",
     lambda o: rename(o["spec"]["template"]["spec"]["containers"][0]
                      ["readinessProbe"], "exec", "exce"), "exce"),
    ("ServiceMonitor", "lathe-server",
     lambda o: rename(o["spec"]["endpoints"][0], "tlsConfig", "tlsconfig"),
     "tlsconfig"),
])
def test_kubernetes_refuses_a_misspelled_field(rendered, scratch, kind, name,
                                               edit, field):
    r = schema_check(misspell(rendered, kind, name, edit), scratch)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"REFUSED {kind}/{name}" in r.stdout, r.stdout
    assert f"'\"{field}\"' does not exist" in r.stdout, r.stdout
    assert r.stdout.count("REFUSED") == 1, r.stdout


def test_a_missing_required_field_is_refused(rendered, scratch):
    broken = misspell(rendered, "Deployment", "lathe-worker",
                      lambda o: o["spec"].pop("selector"))
    r = schema_check(broken, scratch)
    assert r.returncode == 1
    assert "must have required property selector" in r.stdout, r.stdout


# ---- the flags, the docs, and the binaries run with the files' arguments ----

def help_flags(binary):
    r = run([binary, "--help"])
    return set(re.findall(r"--[a-z][a-z-]+", r.stdout + r.stderr))


def binaries(request):
    server = request.config.getoption("--server-bin")
    cli = request.config.getoption("--cli-bin")
    worker = os.path.join(os.path.dirname(server), "lathe-worker")
    need(worker, "lathe-worker, built beside lathe-server")
    return server, worker, cli


def test_every_flag_the_files_pass_exists(request, compose, rendered):
    server_bin, worker_bin, cli_bin = binaries(request)
    known = {"server": help_flags(server_bin), "worker": help_flags(worker_bin),
             "cli": help_flags(cli_bin)}
    used = [("server", compose["services"]["lathe-server"]["command"]),
            ("cli", compose["services"]["lathe-server"]["healthcheck"]["test"])]
    for name in ("lathe-worker-gpu", "lathe-worker-cpu"):
        used.append(("worker", compose["services"][name]["command"]))
    sts = find(rendered, "StatefulSet", "lathe-server")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    used += [("server", c["args"]), ("cli", c["readinessProbe"]["exec"]["command"])]
    dep = find(rendered, "Deployment", "lathe-worker")
    used.append(("worker", dep["spec"]["template"]["spec"]["containers"][0]["args"]))
    for who, args in used:
        for a in args:
            if a.startswith("--"):
                assert a.split("=", 1)[0] in known[who], (who, a)


def doc_block(marker):
    doc = open(DOC, encoding="utf-8").read()
    assert f"<!-- {marker} -->" in doc, marker
    block = doc.split(f"<!-- {marker} -->", 1)[1].split("```sh", 1)[1]
    return block.split("```", 1)[0]


def test_the_docs_name_the_tested_files():
    doc = open(DOC, encoding="utf-8").read()
    assert "docker-compose -f deploy/compose/docker-compose.yml" in doc
    assert "kubectl apply -k deploy/kubernetes" in doc
    for name in ("lathe-tls", "lathe-ca", "lathe-worker-token"):
        assert "kubectl -n lathe create secret" in doc
        assert name in doc, name
    # The secret files the Compose file reads are the ones the doc writes.
    compose = yaml.safe_load(open(COMPOSE))
    for s in compose["secrets"].values():
        assert os.path.basename(s["file"]) in doc, s["file"]


@pytest.fixture(scope="module")
def tls_dir(scratch):
    """The certificates docs/deploy.md's commands make."""
    d = os.path.join(scratch, "deploy-tls")
    os.makedirs(d)
    r = run(["bash", "-euo", "pipefail", "-c", doc_block("tls")], cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    tls = os.path.join(d, "tls")
    for f in ("ca.pem", "server.pem", "server.key"):
        assert os.path.exists(os.path.join(tls, f)), f
    assert os.stat(os.path.join(tls, "server.key")).st_mode & 0o077 == 0
    v = run(["openssl", "verify", "-CAfile", "ca.pem", "server.pem"], cwd=tls)
    assert v.returncode == 0, v.stdout + v.stderr
    text = run(["openssl", "x509", "-in", "server.pem", "-noout", "-ext",
                "subjectAltName"], cwd=tls).stdout
    for name in ("DNS:lathe-server", "DNS:lathe-server.lathe.svc",
                 "DNS:localhost", "IP Address:127.0.0.1"):
        assert name in text, text
    return tls


class Proc:
    def __init__(self, args, log):
        self.log = log
        with open(log, "w") as out:
            self.p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def wait_for(what, check, timeout, procs):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        for p in procs:
            assert p.p.poll() is None, f"exited: {open(p.log).read()}"
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_the_server_probe_and_a_worker_run_with_the_files_arguments(
        request, compose, tls_dir, scratch):
    """The Compose server's arguments (ports made 0, secrets mapped to the
    doc's certificates), its health check command, then the CPU worker's
    arguments with a worker token: the worker registers over TLS."""
    server_bin, worker_bin, cli_bin = binaries(request)
    data = os.path.join(scratch, "deploy-data")
    work = os.path.join(scratch, "deploy-worker")
    secrets = {"/run/secrets/lathe-server-cert": os.path.join(tls_dir, "server.pem"),
               "/run/secrets/lathe-server-key": os.path.join(tls_dir, "server.key"),
               "/run/secrets/lathe-ca": os.path.join(tls_dir, "ca.pem"),
               "/run/secrets/lathe-worker-token": os.path.join(scratch, "worker.token"),
               "/var/lib/lathe": data, "/var/lib/lathe-worker": work}

    def local(args):
        out = []
        for a in args:
            for k, v in secrets.items():
                a = a.replace(k, v)
            out.append(re.sub(r"^(--[a-z-]*listen=)[0-9.]+:[0-9]+$",
                              r"\g<1>127.0.0.1:0", a))
        return out

    procs = []
    try:
        server = Proc([server_bin, "--data-dir", data,
                       *local(compose["services"]["lathe-server"]["command"])],
                      os.path.join(scratch, "deploy-server.log"))
        procs.append(server)
        info = wait_for("server.json", lambda: os.path.exists(
            os.path.join(data, "server.json")) and json.load(open(
                os.path.join(data, "server.json"))), 60, procs)
        port = info["grpc"].rsplit(":", 1)[1]

        probe = compose["services"]["lathe-server"]["healthcheck"]["test"]
        assert probe[0] == "CMD" and probe[1] == "lathe"
        probe_args = [a.replace("localhost:50051", f"localhost:{port}")
                      for a in local(probe[2:])]
        r = run([cli_bin, *probe_args])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "admin" in r.stdout

        base = [cli_bin, "--server", f"localhost:{port}", "--tls-ca",
                secrets["/run/secrets/lathe-ca"], "--token-file",
                os.path.join(data, "admin.token")]
        r = run(base + ["users", "create", "deploy-worker", "--team", "ops",
                        "--role", "worker"])
        assert r.returncode == 0, r.stderr
        r = run(base + ["--output", "json", "tokens", "create", "--user",
                        "deploy-worker"])
        assert r.returncode == 0, r.stderr
        fd = os.open(secrets["/run/secrets/lathe-worker-token"],
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.loads(r.stdout)["token"] + "\n")

        # The worker dials the name in the file (lathe-server), which this
        # machine does not resolve: the same certificate name, another
        # address.
        wargs = local(compose["services"]["lathe-worker-cpu"]["command"])
        wargs = [f"--server=127.0.0.1:{port}" if a.startswith("--server=")
                 else a for a in wargs] + ["--tls-server-name", "lathe-server"]
        worker = Proc([worker_bin, *wargs],
                      os.path.join(scratch, "deploy-worker.log"))
        procs.append(worker)

        def workers():
            with urllib.request.urlopen(f"http://{info['metrics']}/metrics",
                                        timeout=5) as resp:
                return "\nlathe_workers 1" in "\n" + resp.read().decode()
        wait_for("the worker to register", workers, 60, procs)
    finally:
        for p in reversed(procs):
            p.stop()
