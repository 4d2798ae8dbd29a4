"""policy.admission is pure: the installer's policy, read and applied, without an API server.
(The attacks it stops are replayed end to end in test_confused_deputy.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tablerefresh.cli import main
from tablerefresh.commands.operator import PolicyError, load_policy
from tablerefresh.controller.policy.admission import DEFAULT_HOSTS, OperatorPolicy, host_refusal


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("clickhouse://clickhouse.polymarket.svc.cluster.local:8123", True),
        ("https://ch.analytics.svc:8443", True),
        ("clickhouse://CH.Analytics.SVC:8123", True),  # host names are case-insensitive
        ("clickhouse://127.0.0.1:8123", False),
        ("clickhouse://metadata.google.internal", False),
        ("http://169.254.169.254:80", False),
        ("clickhouse://svc:8123", False),  # the pattern is *.svc, not any name ending in svc
        ("chdb:///var/lib/data", False),
    ],
)
def test_the_default_allows_in_cluster_services_only(url: str, allowed: bool) -> None:
    assert (host_refusal(url, OperatorPolicy()) is None) is allowed


def test_patterns_may_name_a_port_and_embedded_paths() -> None:
    policy = OperatorPolicy(allowed_hosts=("ch.example.com:8443", "chdb:///srv/tablerefresh/*"))
    assert host_refusal("https://ch.example.com:8443", policy) is None
    assert host_refusal("https://ch.example.com", policy) is None  # 8443: https's default port
    assert host_refusal("http://ch.example.com:8123", policy) is not None
    assert host_refusal("chdb:///srv/tablerefresh/demo", policy) is None
    assert host_refusal("chdb:///etc", policy) is not None
    # A chdb:// pattern is never a server's, nor a server's pattern a path's.
    assert host_refusal("clickhouse://chdb:8123", OperatorPolicy(allowed_hosts=("chdb://*",))) is not None


def test_flags_add_hosts_to_the_file_and_set_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("allowedHosts: ['ch.example.com']\nallowedImages: ['registry.example/tablerefresh:*']\n")
    policy = load_policy(str(path), ["127.0.0.1"], 5)
    assert policy.allowed_hosts == ("ch.example.com", "127.0.0.1")
    assert policy.allowed_images == ("registry.example/tablerefresh:*",)
    assert policy.min_health_interval_seconds == 5
    assert load_policy(None, [], None).allowed_hosts == DEFAULT_HOSTS


def test_a_bad_policy_stops_the_operator_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("allowedHost: ['typo']\n")
    with pytest.raises(PolicyError, match="allowedHost"):
        load_policy(str(path), [], None)
    assert main(["operator", "-A", "--policy", str(path)]) == 2
    assert "allowedHost" in capsys.readouterr().err
