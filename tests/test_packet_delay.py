"""The benchmark client's measure of how late the agent's packets arrive
(voiceagent_eval.webrtc_client.relative_delay_p99): what an adaptive jitter buffer, a
browser's, would have to absorb."""

from __future__ import annotations

import pytest

from voiceagent_eval.webrtc_client import relative_delay_p99


def test_packet_delay_is_lateness_against_the_earliest_recent_packet():
    on_time = [10 + 0.02 * i for i in range(200)]
    assert relative_delay_p99(on_time) == pytest.approx(0.0, abs=1e-9)
    late = list(on_time)
    for i in range(50, 200, 50):  # a few packets held back 30 ms (a busy sender)
        late[i] += 0.03
    assert relative_delay_p99(late) == pytest.approx(0.03)
    early_start = [on_time[0] - 0.015] + on_time[1:]  # one packet early: the rest look late
    assert relative_delay_p99(early_start) == pytest.approx(0.015)
    assert relative_delay_p99([1.0]) is None
