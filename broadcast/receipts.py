"""Delivery receipts: stored per provider message id, and counted once per alert and channel.

A receipt (SMPP deliver_sm, Twilio status callback) names only the provider's message id. When
the sender records a message sent it also writes who owns that id (``keys.receipt_owner``:
alert and channel); the first final receipt for the id then adds one to the alert's
``<channel>:delivered`` or ``<channel>:undelivered`` counter and deletes the owner, so a repeated
receipt counts nothing. A receipt can beat the sender's bookkeeping (the SMSC answers within
milliseconds); it then leaves its outcome in ``keys.receipt_early`` and
:data:`broadcast.accounting.FINALIZE` counts it when the send is recorded. Both sides run as
Lua scripts, so exactly one of them counts each message.

Receipts never go back: one is only replaced by one at the same rank or later (a late "sent"
after "delivered" is ignored). SMPP "delivered" receipts are counted but not stored one by one
(:meth:`channels.smpp.Receipt.stored`): at city scale they would be gigabytes saying "fine";
undelivered ones are stored with their error code, for the failure report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from broadcast import keys

DELIVERED = "delivered"
UNDELIVERED = "undelivered"

# ARGV[1] receipt TTL, ARGV[2] early TTL, ARGV[3..5] key prefixes (receipt, owner, early), ARGV[6]
# the receipts, one per line: provider ref TAB rank TAB outcome ("delivered" | "undelivered" | ""
# if not final) TAB receipt JSON ("" to count only). One argument, not four per receipt: packing
# thousands of arguments a second costs the sender more than the script costs Redis.
# Keys are built here from their prefixes: one call stores a whole batch of receipts (one Redis
# primary by design; see DESIGN.md). Returns how many receipts were counted against an alert.
RECORD = """
local ttl, early_ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local receipt_prefix, owner_prefix, early_prefix = ARGV[3], ARGV[4], ARGV[5]
local counted = 0
for ref, rank, outcome, doc in string.gmatch(ARGV[6], '([^\\t\\n]+)\\t([^\\t\\n]*)\\t([^\\t\\n]*)\\t([^\\n]*)') do
  rank = tonumber(rank)
  local newer = true
  if doc ~= '' then
    local current = redis.call('GET', receipt_prefix .. ref)
    if current then
      local ok, old = pcall(cjson.decode, current)
      if ok and type(old) == 'table' and tonumber(old['rank'] or 0) > rank then newer = false end
    end
    if newer then redis.call('SET', receipt_prefix .. ref, doc, 'EX', ttl) end
  end
  if newer then
    if outcome ~= '' then
      local owner = redis.call('GET', owner_prefix .. ref)
      if owner then
        local bar = string.find(owner, '|', 1, true)
        redis.call('HINCRBY', string.sub(owner, 1, bar - 1), string.sub(owner, bar + 1) .. ':' .. outcome, 1)
        redis.call('DEL', owner_prefix .. ref)
        counted = counted + 1
      elseif redis.call('EXISTS', early_prefix .. ref) == 0 then
        redis.call('SET', early_prefix .. ref, outcome, 'EX', early_ttl)
      end
    end
  end
end
return counted
"""


@dataclass(frozen=True, slots=True)
class Receipt:
    provider_ref: str
    # What is stored under keys.receipt (provider, kind, status, final, rank...); None: count it, store
    # nothing (bulk SMS: seventeen million "delivered" documents would only cost memory).
    document: dict[str, Any] | None
    rank: int
    outcome: str  # DELIVERED, UNDELIVERED, or "" while not final


def _args(receipts: Sequence[Receipt]) -> list[Any]:
    lines = []
    for r in receipts:
        if not r.provider_ref or any(c in r.provider_ref for c in "\t\n"):
            continue  # not an id a provider gives; nothing could ever own it
        # json.dumps escapes control characters, so a document never holds a raw tab or newline.
        doc = "" if r.document is None else json.dumps(r.document, ensure_ascii=False)
        lines.append(f"{r.provider_ref}\t{r.rank}\t{r.outcome}\t{doc}")
    return [keys.RECEIPT_TTL_SECONDS, keys.RECEIPT_EARLY_TTL_SECONDS, keys.receipt(""), keys.receipt_owner(""),
            keys.receipt_early(""), "\n".join(lines)]


async def record(client: redis.asyncio.Redis, receipts: Sequence[Receipt]) -> int:
    """Store ``receipts`` and count the final ones against their alerts; returns how many were counted."""
    if not receipts:
        return 0
    return int(await client.eval(RECORD, 0, *_args(receipts)))  # type: ignore[misc]


def record_sync(client: redis.Redis, receipts: Sequence[Receipt]) -> int:
    if not receipts:
        return 0
    return int(client.eval(RECORD, 0, *_args(receipts)))  # type: ignore[arg-type]


def stored(client: redis.Redis, provider_ref: str) -> dict[str, Any] | None:
    raw = client.get(keys.receipt(provider_ref))
    return json.loads(raw) if raw else None
