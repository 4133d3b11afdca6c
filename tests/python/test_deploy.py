"""The monitoring files in deploy/ against promtool and a live server:
Prometheus's configuration and alert rules (with their unit tests), every
PromQL expression of the Grafana dashboard, the dashboard's structure, and
every metric a panel or an alert names being one the server exports."""

import json
import os
import re
import subprocess
import time
import urllib.request

import pytest
from conftest import PARAMS, ROOT

PROMTOOL = "/usr/bin/promtool"
DEPLOY = os.path.join(ROOT, "deploy")
DASHBOARD = os.path.join(DEPLOY, "grafana", "lathe.json")
ALERTS = os.path.join(DEPLOY, "prometheus", "alerts.yml")


def promtool(*args):
    r = subprocess.run([PROMTOOL, *args], capture_output=True, text=True)
    assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}{r.stderr}"
    return r.stdout


def dashboard_exprs():
    dash = json.load(open(DASHBOARD))
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_prometheus_config_and_alert_rules():
    promtool("check", "config", os.path.join(DEPLOY, "prometheus",
                                             "prometheus.yml"))
    out = promtool("test", "rules", os.path.join(DEPLOY, "prometheus",
                                                 "alerts_test.yml"))
    assert "SUCCESS" in out
    alerts = open(ALERTS).read()
    for name in ("LatheWorkerLost", "LatheQueueStalled", "LatheJobFailureRate",
                 "LatheDiskFilling"):
        assert f"alert: {name}" in alerts
        # Each alert has a unit test that expects it to fire.
        assert f"alertname: {name}" in open(
            os.path.join(DEPLOY, "prometheus", "alerts_test.yml")).read()


def test_the_dashboard_is_well_formed_and_its_queries_parse(scratch):
    dash = json.load(open(DASHBOARD))
    assert dash["uid"] and dash["title"] == "Lathe"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for what in ("queue", "running jobs by owner", "outcomes", "workers",
                 "samples per second", "loss", "artifacts", "latency"):
        assert what in titles, what
    for p in dash["panels"]:
        assert p["type"] == "timeseries" and p["targets"], p["title"]
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24
        assert p["datasource"]["uid"] == "${datasource}"
        for t in p["targets"]:
            assert t["refId"] and t["expr"]
    # promtool parses PromQL in rule files: each expression as a recording
    # rule.
    rules = os.path.join(scratch, "dashboard_rules.yml")
    with open(rules, "w") as f:
        f.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, expr in enumerate(dashboard_exprs()):
            f.write(f"      - record: lathe:dashboard_{i}\n")
            f.write(f"        expr: {json.dumps(expr)}\n")
    out = promtool("check", "rules", rules)
    assert f"{len(dashboard_exprs())} rules found" in out


def scrape(address):
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return r.read().decode()


def exported_names(text):
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_metric_named_is_exported(server, client, data):
    """A job runs while /metrics is read: the names the dashboard and the
    alerts use must all appear (some exist only while a job runs)."""
    assert server.metrics
    job = client.submit(task="text-classification", model="preset:bert-tiny",
                        train_data=data["train"],
                        params=dict(PARAMS, epochs=4))
    seen = set()
    deadline = time.time() + 300
    while time.time() < deadline:
        seen |= exported_names(scrape(server.metrics))
        if job.refresh().done:
            break
        time.sleep(0.5)
    seen |= exported_names(scrape(server.metrics))
    assert job.state == "SUCCEEDED", job.error
    used = set()
    for text in dashboard_exprs() + [open(ALERTS).read()]:
        used |= set(re.findall(r"\blathe_[a-z_]+", text))
    assert used, "no lathe_ metric named"
    missing = sorted(n for n in used if n not in seen)
    assert not missing, f"named but not exported: {missing}; exported: {sorted(seen)}"
