"""Reading Prometheus's HTTP API (instant and range queries), with timeouts and one clear error.

Example::

    async with httpx.AsyncClient() as http:
        prom = PromQL("http://prometheus:9090", http)
        for series in await prom.instant("sum by (script) (sms_script_running)"):
            print(series.labels["script"], series.value)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from sms_plugin import tls
from sms_plugin.errors import Unavailable

TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels, its value and when that value was taken."""

    labels: dict[str, str]
    value: float
    at: float


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and (Unix time, value) points."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


class PromQL:
    """Queries one Prometheus; any failure (down, slow, refused query) is :class:`Unavailable`."""

    def __init__(self, url: str, http: httpx.AsyncClient, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.timeout = timeout

    async def instant(self, query: str, at: float) -> list[Sample]:
        data = await self._get("query", {"query": query, "time": f"{at:.3f}"})
        return [Sample(r["metric"], float(r["value"][1]), float(r["value"][0])) for r in data["result"]]

    async def latest(self, selector: str, at: float, lookback: str = "5m") -> list[Sample]:
        """Each series of ``selector`` with its newest raw sample (value and scrape time) within ``lookback``."""
        data = await self._get("query", {"query": f"{selector}[{lookback}]", "time": f"{at:.3f}"})
        return [Sample(r["metric"], float(r["values"][-1][1]), float(r["values"][-1][0])) for r in data["result"]]

    async def range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        data = await self._get("query_range", {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                               "step": f"{step:g}"})
        return [Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            reply = await self.http.get(f"{self.url}/api/v1/{path}", params=params, timeout=self.timeout)
            body = reply.json()
        except (httpx.HTTPError, ValueError) as error:
            refused = tls.refusal(f"Prometheus at {self.url}", error)
            raise Unavailable(str(refused) if refused else f"Prometheus at {self.url} did not answer: {type(error).__name__} {error}".strip()) from None
        if body.get("status") != "success":
            raise Unavailable(f"Prometheus refused a query: {body.get('errorType')}: {body.get('error')}")
        return body["data"]
