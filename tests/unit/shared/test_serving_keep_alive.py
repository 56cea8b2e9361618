"""uvicorn's idle timeout of a kept-alive connection lies past the head deadline, so the documented deadline
(HERALD_HTTP_HEAD_TIMEOUT_SECONDS) is what closes an idle connection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from herald_shared.serving import ServerLimits, keep_alive_seconds


@given(st.floats(min_value=0.01, max_value=3600, allow_nan=False))
def test_uvicorns_idle_timeout_is_past_the_head_deadline(head_timeout: float) -> None:
    assert keep_alive_seconds(ServerLimits(head_timeout=head_timeout)) > head_timeout


def test_the_default_leaves_httpx_five_second_expiry_well_before_the_close() -> None:
    assert keep_alive_seconds(ServerLimits()) == 11
