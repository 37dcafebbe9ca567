"""The Grafana dashboard only queries metrics that exist.

Every PromQL expression of every panel is reduced to the metric names it selects, and each name
must be one the code registers (actors/metrics.py, server/metrics.py), one of Dramatiq's
(from its Prometheus middleware's source), a RabbitMQ name the README documents, or ``up``.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import dramatiq.middleware.prometheus as dramatiq_prometheus
import pytest
import yaml

from actors import metrics as worker_metrics
from server import metrics as server_metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "docs" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "codebase-mcp.json"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels, keywords and numbers removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors ([5m], [$__rate_interval])
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call or word in _KEYWORDS or word in ("inf", "nan", "Inf", "NaN"):
            continue
        names.add(word)
    return names


def dramatiq_names() -> set[str]:
    """Series names Dramatiq's middleware defines, read from its source (its metrics exist only after boot)."""
    source = inspect.getsource(dramatiq_prometheus)
    names: set[str] = set()
    for kind, name in re.findall(r'prom\.(Counter|Gauge|Histogram)\(\s*"([a-z_]+)"', source):
        base = name.removesuffix("_total") if kind == "Counter" else name
        names.update(base + suffix for suffix in _SUFFIXES[kind.lower()])
    return names


def rabbitmq_names() -> set[str]:
    """The RabbitMQ exporter names the README documents (the plugin itself does not run in unit tests)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(rabbitmq_[a-z_]+)`", section))


def known_names() -> set[str]:
    return (
        worker_metrics.registered_names()
        | server_metrics.registered_names()
        | dramatiq_names()
        | rabbitmq_names()
        | {"up"}
    )


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_metric_names_parser() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, stage) (rate(codebase_mcp_batch_stage_duration_seconds_bucket"
        '{stage=~"chunk|embed", x="a{b}"}[$__rate_interval]))) / clamp_min(sum(up offset 5m), 1) and on(job) foo:bar'
    )
    assert metric_names(expr) == {"codebase_mcp_batch_stage_duration_seconds_bucket", "up", "foo:bar"}


def test_dramatiq_names_are_read_from_its_source() -> None:
    names = dramatiq_names()
    assert {"dramatiq_messages_total", "dramatiq_message_duration_milliseconds_bucket"} <= names
    assert "dramatiq_messages_inprogress" in names


def test_every_panel_queries_existing_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = known_names()
    queried: set[str] = set()
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"panel {panel['title']!r}: no metric in {target['expr']!r}"
            unknown = names - known
            assert not unknown, f"panel {panel['title']!r} queries unknown metrics {sorted(unknown)}"
            queried |= names
    # The dashboard covers the pipeline's throughput, progress, queues, latencies and failures.
    for required in (
        "codebase_mcp_files_total",
        "codebase_mcp_running_jobs_files_processed",
        "codebase_mcp_queue_messages",
        "codebase_mcp_batch_stage_duration_seconds_bucket",
        "codebase_mcp_embedding_request_duration_seconds_bucket",
        "codebase_mcp_tool_call_duration_seconds_bucket",
        "codebase_mcp_jobs_finished_total",
    ):
        assert required in queried, f"no panel shows {required}"


def test_panel_ids_and_datasource_are_consistent() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    for panel in panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]


DOCUMENTED = sorted(
    set(re.findall(r"^\| `(codebase_mcp_[a-z_]+)` \|", (ROOT / "README.md").read_text(), flags=re.MULTILINE))
)


def test_the_readme_metrics_table_is_found() -> None:
    # If the table's format changes, the regex finds nothing and the test below has no cases.
    assert len(DOCUMENTED) >= 15, DOCUMENTED


@pytest.mark.parametrize("name", DOCUMENTED)
def test_documented_metric_is_registered(name: str) -> None:
    known = worker_metrics.registered_names() | server_metrics.registered_names()
    assert name in known or f"{name}_bucket" in known, f"README documents {name}, the code does not register it"
