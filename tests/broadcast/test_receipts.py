"""Delivery receipts counted once per alert and channel, whichever comes first: the receipt or the send."""

from __future__ import annotations

import redis

from broadcast import accounting, keys, receipts


def receipt(ref: str, status: str = "delivered", rank: int = 3) -> receipts.Receipt:
    outcome = "" if rank < 3 else (receipts.DELIVERED if status == "delivered" else receipts.UNDELIVERED)
    return receipts.Receipt(ref, {"provider": "smpp", "status": status, "rank": rank}, rank, outcome)


def counts(client: redis.Redis, alert_id: str) -> dict[str, int]:
    return next(p.counts for p in accounting.read(client, alert_id) if p.channel == "sms")


def test_a_receipt_after_the_send_is_counted_once(redis_client: redis.Redis) -> None:
    accounting.finalize(redis_client, "A1", "sms", [(0, "sent", "m-1"), (1, "sent", "m-2"), (2, "failed")], 3600)
    assert redis_client.get(keys.receipt_owner("m-1")) == f"{keys.progress('A1')}|sms".encode()
    assert receipts.record_sync(redis_client, [receipt("m-1"), receipt("m-2", "undelivered")]) == 2
    assert receipts.record_sync(redis_client, [receipt("m-1")]) == 0  # the SMSC sent it again
    got = counts(redis_client, "A1")
    assert (got["sent"], got["failed"], got["delivered"], got["undelivered"]) == (2, 1, 1, 1)
    assert receipts.stored(redis_client, "m-2")["status"] == "undelivered"
    assert redis_client.get(keys.receipt_owner("m-1")) is None


def test_a_receipt_that_beats_the_send_is_counted_when_the_send_is_recorded(redis_client: redis.Redis) -> None:
    assert receipts.record_sync(redis_client, [receipt("m-9")]) == 0
    assert redis_client.get(keys.receipt_early("m-9")) == b"delivered"
    accounting.finalize(redis_client, "A2", "sms", [(5, "sent", "m-9")], 3600)
    assert counts(redis_client, "A2")["delivered"] == 1
    assert redis_client.get(keys.receipt_early("m-9")) is None
    assert redis_client.get(keys.receipt_owner("m-9")) is None
    # The batch ran again (its worker died): nothing is counted twice.
    accounting.finalize(redis_client, "A2", "sms", [(5, "sent", "m-9")], 3600)
    assert counts(redis_client, "A2")["delivered"] == 1 and counts(redis_client, "A2")["sent"] == 1


def test_interim_receipts_count_nothing_and_never_replace_a_final_one(redis_client: redis.Redis) -> None:
    accounting.finalize(redis_client, "A3", "sms", [(0, "sent", "m-5")], 3600)
    receipts.record_sync(redis_client, [receipt("m-5", "sent", rank=2)])
    assert counts(redis_client, "A3")["delivered"] == 0
    receipts.record_sync(redis_client, [receipt("m-5", "delivered")])
    receipts.record_sync(redis_client, [receipt("m-5", "sent", rank=2)])  # late, out of order
    assert receipts.stored(redis_client, "m-5")["status"] == "delivered"
    assert counts(redis_client, "A3")["delivered"] == 1


def test_already_final_reads_the_done_bitmap_and_set_exactly(redis_client: redis.Redis) -> None:
    rows = [3, 8, 9, 700_000, 12]
    accounting.finalize(redis_client, "A4", "sms", [(8, "sent"), (700_000, "failed")], 3600)
    # Rows close together take one GETRANGE; a far-away row makes the batch ask bit by bit: same answer.
    assert accounting.already_final(redis_client, "A4", "sms", [3, 8, 9, 12]) == [False, True, False, False]
    assert accounting.already_final(redis_client, "A4", "sms", rows) == [False, True, False, True, False]
    assert accounting.already_final(redis_client, "A4", "sms", [1_000_000]) == [False]  # past the bitmap's end
    accounting.finalize(redis_client, "A4", "webhook", [("partner-a", "sent")], 3600)
    assert accounting.already_final(redis_client, "A4", "webhook", ["partner-a", "partner-b"]) == [True, False]
