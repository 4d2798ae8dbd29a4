"""Run one health check: credentials from the Secret, connect, measure. Blocking; never raises.

Runs in the scheduler's worker threads. Every way it can fail becomes a :class:`HealthResult`
saying which (unreachable, query failed, no credentials), so the caller always has a status to write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from tablerefresh.controller.healthcheck import Check, Failure, HealthResult
from tablerefresh.controller.kube import Kube, KubeError
from tablerefresh.dataplane.connection import connect, redact
from tablerefresh.dataplane.errors import RefreshError, Unreachable
from tablerefresh.dataplane.failures import one_line
from tablerefresh.dataplane.health import measure

log = logging.getLogger(__name__)

Connect = Callable[..., Client]


class CredentialsError(Exception):
    pass


class Prober:
    def __init__(
        self,
        kube: Kube,
        *,
        timeout: float = 30.0,
        connector: Connect = connect,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._kube = kube
        self._timeout = timeout
        self._connect = connector
        self._clock = clock

    def __call__(self, check: Check) -> HealthResult:
        now = self._clock()
        try:
            username, password = self._credentials(check)
        except CredentialsError as exc:
            return HealthResult(now, failure=Failure.CREDENTIALS, error=str(exc))
        spec = check.spec
        try:
            client = self._connect(
                spec.clickhouse.url,
                database=spec.clickhouse.database,
                settings=spec.clickhouse.settings,
                username=username,
                password=password,
                connect_timeout=min(10.0, self._timeout),
                send_receive_timeout=self._timeout,
            )
        except Unreachable as exc:
            return HealthResult(now, failure=Failure.UNREACHABLE, error=str(exc))
        except RefreshError as exc:  # e.g. an unsupported URL scheme
            return HealthResult(now, failure=Failure.QUERY, error=str(exc))
        try:
            return HealthResult(now, report=measure(client, spec, now=now))
        except OperationalError as exc:  # the connection broke off: the network, not the query
            return HealthResult(now, failure=Failure.UNREACHABLE, error=_describe(exc, spec.clickhouse.url))
        except ClickHouseError as exc:
            return HealthResult(now, failure=Failure.QUERY, error=one_line(exc))
        except Exception as exc:  # a bug must not stop the other checks
            log.exception("%s/%s: health check failed", *check.key)
            return HealthResult(now, failure=Failure.QUERY, error=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            client.close()

    def _credentials(self, check: Check) -> tuple[str | None, str | None]:
        ref = check.spec.clickhouse.credentials_secret
        if ref is None:
            return None, None
        try:
            data = self._kube.read_secret(check.key[0], ref.name)
        except KubeError as exc:
            raise CredentialsError(f"cannot read Secret {ref.name}: {exc}") from exc
        if data is None:
            raise CredentialsError(f"Secret {ref.name} does not exist in this namespace")
        missing = [k for k in (ref.username_key, ref.password_key) if k not in data]
        if missing:
            raise CredentialsError(f"Secret {ref.name} has no key {', '.join(missing)}")
        return data[ref.username_key], data[ref.password_key]




def _describe(exc: BaseException, url: str) -> str:
    return f"lost the connection to ClickHouse at {redact(url)}: {one_line(exc)}"
