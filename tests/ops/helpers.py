"""HTTP requests to a metrics endpoint, with the standard library's client."""

from __future__ import annotations

import asyncio
import http.client
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str
    body: str


def _fetch(port: int, path: str, method: str) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read().decode()
        return Reply(response.status, response.getheader("Content-Type", ""), body)
    finally:
        connection.close()


async def fetch(port: int, path: str, method: str = "GET") -> Reply:
    """One request, made in a thread so the endpoint's event loop keeps serving."""
    return await asyncio.to_thread(_fetch, port, path, method)
