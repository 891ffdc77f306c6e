"""A request's overhead: its time in the bridge, without the waits for the upstream and the client."""

from __future__ import annotations

import time

from sage_bridge.routing.context import RequestContext


def test_overhead_excludes_upstream_and_client_waits() -> None:
    ctx = RequestContext(request_id="r", client="uid:0", started=time.perf_counter() - 1.0)
    ctx.upstream_seconds = 0.3
    ctx.client_seconds = 0.5

    overhead = ctx.overhead_ms()

    assert overhead >= 200.0
    assert overhead < 400.0  # 200 ms plus the time this test took, with room for a loaded machine


def test_overhead_is_never_negative() -> None:
    ctx = RequestContext(request_id="r", client="uid:0")
    ctx.upstream_seconds = 5.0

    assert ctx.overhead_ms() == 0.0
