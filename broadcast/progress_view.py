"""A terminal view of an alert's progress (the JSON of ``GET /api/alerts/{id}/progress``).

Pure functions: no I/O and no terminal control codes; ``broadcast alert progress --watch``
redraws by printing the text again after clearing the screen.

    Alert 20260701-080000-abcdef (issued)
    channel   progress      done  sent  failed  suppressed  pending  targeted  rate/s  ETA
    cap_feed  [##########] 100.0%    1       0           0        0         1     0.0  done
    sms       [####x     ]  45.0%  400      50           0      550     1,000   100.0  6s
    -------------------------------------------------------------------------------------
    total     [####x     ]  45.0%  401      50           0      550     1,001   100.0  6s
    bar: # sent  x failed  - suppressed  (blank) pending
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

SENT_CHAR = "#"
FAILED_CHAR = "x"
SUPPRESSED_CHAR = "-"
PENDING_CHAR = " "
LEGEND = f"bar: {SENT_CHAR} sent  {FAILED_CHAR} failed  {SUPPRESSED_CHAR} suppressed  (blank) pending"

_HEADER = ("channel", "progress", "done", "sent", "failed", "suppressed", "pending", "targeted", "rate/s", "ETA")
_LEFT_ALIGNED = frozenset({0, 1, 9})  # channel, bar, ETA


def format_eta(seconds: float | None) -> str:
    """``--`` when unknown; else rounded up to a whole second: ``42s``, ``3m 05s``, ``2h 07m``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) or seconds < 0:
        return "--"
    if math.isinf(seconds):
        return "--"
    total = math.ceil(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    return f"{total // 3600}h {total % 3600 // 60:02d}m"


def progress_bar(sent: int, failed: int, suppressed: int, targeted: int, width: int = 40) -> str:
    """Exactly ``width`` characters: sent, failed, suppressed, then pending (blank), in proportion.

    Each boundary is the cumulative count scaled to ``width`` and rounded (halves up), so the
    segments always add up to ``width`` and each is within one character of its exact share.
    Counts above ``targeted`` (which the accounting rules out) scale against their own sum;
    nothing targeted gives an all-blank bar.
    """
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width!r}")
    sent, failed, suppressed = max(sent, 0), max(failed, 0), max(suppressed, 0)
    whole = max(targeted, sent + failed + suppressed)
    if whole <= 0:
        return PENDING_CHAR * width

    def edge(count: int) -> int:
        return (2 * count * width + whole) // (2 * whole)

    a, b, c = edge(sent), edge(sent + failed), edge(sent + failed + suppressed)
    return SENT_CHAR * a + FAILED_CHAR * (b - a) + SUPPRESSED_CHAR * (c - b) + PENDING_CHAR * (width - c)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _done_percent(final: int, targeted: int) -> str:
    if targeted <= 0:
        return "-"
    # Rounded down: never 100.0% while anything is pending.
    return f"{math.floor(min(final, targeted) * 1000 / targeted) / 10:.1f}%"


def _pending(counts: Mapping[str, Any]) -> int:
    if counts.get("pending") is not None:
        return _int(counts["pending"])
    return _int(counts.get("targeted")) - sum(_int(counts.get(c)) for c in ("sent", "failed", "suppressed"))


def _row(name: str, counts: Mapping[str, Any], rate: float | None, eta: float | None, width: int) -> list[str]:
    targeted, sent = _int(counts.get("targeted")), _int(counts.get("sent"))
    failed, suppressed = _int(counts.get("failed")), _int(counts.get("suppressed"))
    pending = _pending(counts)
    if pending <= 0 and targeted > 0:
        eta_text = "done"
    elif pending <= 0:
        eta_text = "-"
    else:
        eta_text = format_eta(eta)
    return [name, f"[{progress_bar(sent, failed, suppressed, targeted, width)}]",
            _done_percent(sent + failed + suppressed, targeted), f"{sent:,}", f"{failed:,}", f"{suppressed:,}",
            f"{pending:,}", f"{targeted:,}", "-" if rate is None else f"{rate:,.1f}", eta_text]


def _total_eta(channels: Sequence[Mapping[str, Any]]) -> float | None:
    """Channels go out in parallel: the slowest one decides; unknown if any pending one is unknown."""
    worst = 0.0
    for counts in channels:
        if _pending(counts) <= 0:
            continue
        eta = _float(counts.get("eta_seconds"))
        if eta is None:
            return None
        worst = max(worst, eta)
    return worst


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) if i in _LEFT_ALIGNED else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return lines


def render_progress(progress: Mapping[str, Any], width: int = 40) -> str:
    """The progress of one alert as lines of text: a header, one line per channel, a total, a legend.

    Args:
        progress: The JSON body of ``GET /api/alerts/{id}/progress``. Missing counters count as 0;
            ``pending`` is derived when absent; an absent or null ``eta_seconds`` shows as ``--``.
        width: Characters inside each bar's brackets (at least 1).

    Returns:
        The text, without a trailing newline and without terminal control codes.

    Raises:
        ValueError: ``width`` is below 1.
    """
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width!r}")
    channels: Mapping[str, Mapping[str, Any]] = progress.get("channels") or {}
    state = progress.get("state")
    title = f"Alert {progress.get('id', '?')}" + (f" ({state})" if state else "")

    rows: list[list[str]] = [list(_HEADER)]
    for name, counts in channels.items():
        rows.append(_row(str(name), counts, _float(counts.get("rate_per_second")),
                         _float(counts.get("eta_seconds")), width))
    totals: Mapping[str, Any] = progress.get("totals") or {
        counter: sum(_int(c.get(counter)) for c in channels.values())
        for counter in ("targeted", "sent", "failed", "suppressed")}
    total_rate = sum(_float(c.get("rate_per_second")) or 0.0 for c in channels.values())
    rows.append(_row("total", totals, total_rate, _total_eta(list(channels.values())), width))

    lines = _table(rows)
    rule = "-" * max(len(line) for line in lines)
    body = [title, lines[0]]
    body += lines[1:-1] if channels else ["(no channel has started yet)"]
    body += [rule, lines[-1], LEGEND]
    return "\n".join(body)
