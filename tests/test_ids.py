"""Request and completion ids: their shape, and no repeats."""

from __future__ import annotations

import re

from sage_bridge import ids


def test_request_id_is_32_hex_digits() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", ids.request_id())


def test_completion_id_has_openai_shape() -> None:
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{24}", ids.completion_id())


def test_ids_do_not_repeat() -> None:
    request_ids = {ids.request_id() for _ in range(10_000)}
    completion_ids = {ids.completion_id() for _ in range(10_000)}

    assert len(request_ids) == 10_000
    assert len(completion_ids) == 10_000
