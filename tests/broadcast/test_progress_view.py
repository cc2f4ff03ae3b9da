"""The terminal view of an alert's progress (broadcast/progress_view.py)."""

from __future__ import annotations

import itertools
import re

import pytest

from broadcast.progress_view import LEGEND, format_eta, progress_bar, render_progress


def channel(targeted: int, sent: int = 0, failed: int = 0, suppressed: int = 0, *, rate: float = 0.0,
            eta: float | None = None, **extra: int) -> dict:
    pending = targeted - sent - failed - suppressed
    return {"targeted": targeted, "queued": 0, "sent": sent, "failed": failed, "suppressed": suppressed,
            "delivered": 0, "undelivered": 0, "pending": pending, "rate_per_second": rate, "eta_seconds": eta,
            **extra}


def body(**channels: dict) -> dict:
    totals = {k: sum(c[k] for c in channels.values())
              for k in ("targeted", "queued", "sent", "failed", "suppressed", "delivered", "undelivered", "pending")}
    return {"id": "20260701-080000-abcdef", "state": "issued", "channels": channels, "totals": totals}


def line_of(text: str, name: str) -> str:
    matches = [line for line in text.splitlines() if line.split(" ", 1)[0] == name]
    assert len(matches) == 1, text
    return matches[0]


def bar_of(line: str, width: int = 40) -> str:
    match = re.search(r"\[(.*)\]", line)
    assert match, line
    assert len(match.group(1)) == width, line
    return match.group(1)


def test_half_sent_fills_exactly_half_the_bar() -> None:
    text = render_progress(body(sms=channel(1000, sent=500, rate=100.0, eta=5.0)))
    bar = bar_of(line_of(text, "sms"))
    assert bar == "#" * 20 + " " * 20


def test_sent_failed_and_suppressed_each_get_their_share() -> None:
    text = render_progress(body(sms=channel(100, sent=50, failed=25, suppressed=5, rate=10.0, eta=2.0)))
    assert bar_of(line_of(text, "sms")) == "#" * 20 + "x" * 10 + "-" * 2 + " " * 8
    assert bar_of(line_of(text, "sms"), 40).count(" ") == 8


def test_the_width_is_honoured() -> None:
    text = render_progress(body(sms=channel(10, sent=3, failed=1)), width=10)
    assert bar_of(line_of(text, "sms"), 10) == "###x      "
    with pytest.raises(ValueError):
        render_progress(body(sms=channel(10)), width=0)


def test_segments_always_add_up_to_the_width_and_stay_within_one_character() -> None:
    for targeted, width in ((3, 40), (7, 13), (1000, 40)):
        step = max(1, targeted // 7)
        for sent, failed, suppressed in itertools.product(range(0, targeted + 1, step), repeat=3):
            if sent + failed + suppressed > targeted:
                continue
            bar = progress_bar(sent, failed, suppressed, targeted, width)
            assert len(bar) == width
            for char, count in (("#", sent), ("x", failed), ("-", suppressed)):
                assert abs(bar.count(char) - count * width / targeted) < 1 + 1e-9, (sent, failed, suppressed, bar)
    # A third each of 40: boundaries at 13.33 and 26.67 round to 13 and 27.
    assert progress_bar(1, 1, 1, 3, 40) == "#" * 13 + "x" * 14 + "-" * 13


def test_a_complete_channel_has_a_full_bar_and_says_done() -> None:
    line = line_of(render_progress(body(cap_feed=channel(1, sent=1, eta=0.0))), "cap_feed")
    assert bar_of(line) == "#" * 40
    assert "100.0%" in line and line.endswith("done")


def test_the_percentage_never_rounds_up_to_complete() -> None:
    line = line_of(render_progress(body(sms=channel(10_000, sent=9_999, rate=1.0, eta=1.0))), "sms")
    assert "99.9%" in line and "100.0%" not in line


def test_a_channel_with_nobody_targeted_does_not_divide_by_zero() -> None:
    text = render_progress(body(voice=channel(0), sms=channel(0)))
    for name in ("voice", "sms", "total"):
        line = line_of(text, name)
        assert bar_of(line) == " " * 40
        assert "%" not in line
    # Counts without a target (never written by the accounting) are still drawn, against their own sum.
    assert progress_bar(2, 2, 0, 0, 40) == "#" * 20 + "x" * 20


def test_counts_rate_and_eta_are_shown() -> None:
    text = render_progress(body(sms=channel(12_345, sent=2_345, failed=7, suppressed=3, rate=123.45, eta=80.3)))
    cells = line_of(text, "sms").split("]", 1)[1].split()
    assert cells == ["19.0%", "2,345", "7", "3", "9,990", "12,345", "123.5", "1m", "21s"]


def test_the_total_line_sums_channels_and_takes_the_slowest_eta() -> None:
    text = render_progress(body(sms=channel(100, sent=50, rate=10.0, eta=5.0),
                                email=channel(300, sent=100, rate=2.0, eta=100.0)))
    total = line_of(text, "total")
    assert bar_of(total) == "#" * 15 + " " * 25
    assert total.split("]", 1)[1].split() == ["37.5%", "150", "0", "0", "250", "400", "12.0", "1m", "40s"]
    lines = text.splitlines()
    assert lines[0] == "Alert 20260701-080000-abcdef (issued)"
    assert lines[-1] == LEGEND
    assert lines.index(total) == len(lines) - 2


def test_an_unknown_eta_anywhere_makes_the_total_eta_unknown() -> None:
    text = render_progress(body(sms=channel(100, sent=50, rate=10.0, eta=5.0), email=channel(300, eta=None)))
    assert line_of(text, "email").endswith(" --")
    assert line_of(text, "total").endswith(" --")


def test_missing_fields_are_tolerated() -> None:
    text = render_progress({"id": "a", "channels": {"sms": {"targeted": 4, "sent": 1}}})
    assert bar_of(line_of(text, "sms")) == "#" * 10 + " " * 30
    assert line_of(text, "sms").split("]", 1)[1].split() == ["25.0%", "1", "0", "0", "3", "4", "-", "--"]
    assert line_of(text, "total").split("]", 1)[1].split()[:6] == ["25.0%", "1", "0", "0", "3", "4"]


def test_an_alert_without_channels_says_so() -> None:
    text = render_progress({"id": "a", "state": "approved", "channels": {}, "totals": {}})
    assert "(no channel has started yet)" in text
    assert bar_of(line_of(text, "total")) == " " * 40


def test_no_terminal_control_codes() -> None:
    text = render_progress(body(sms=channel(100, sent=50, failed=10, rate=3.0, eta=13_000.0)))
    assert not text.endswith("\n")
    assert all(ch == "\n" or ch.isprintable() for ch in text)


@pytest.mark.parametrize(("seconds", "shown"), [
    (None, "--"), (float("nan"), "--"), (float("inf"), "--"), (-1.0, "--"),
    (0, "0s"), (0.2, "1s"), (42, "42s"), (59.5, "1m 00s"), (60, "1m 00s"), (125, "2m 05s"),
    (3599, "59m 59s"), (3600, "1h 00m"), (3725, "1h 02m"), (100_000, "27h 46m"),
])
def test_eta_formatting(seconds: float | None, shown: str) -> None:
    assert format_eta(seconds) == shown
