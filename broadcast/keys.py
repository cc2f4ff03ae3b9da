"""Every Redis key this service writes, in one place.

Owners: alert records, their indexes and audit streams are permanent (the record of what
was issued); user and token keys live until the user is removed. RQ's own keys belong to
RQ. Anything added later with a limited life must get a TTL here.
"""

from __future__ import annotations

PREFIX = "bc:"

# String: the alert record as JSON (broadcast.store.AlertRecord).
def alert(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}"


# Hash: state, expires, replaced_by, version of the alert record (broadcast.records.AlertStatus),
# written with the record in the same transaction; acknowledgements read it instead of the record.
# Owned by the alert: permanent, like the record.
def alert_status(alert_id: str) -> str:
    return f"{PREFIX}alert-status:{alert_id}"


# Sorted set: alert id -> creation time (epoch seconds), for listing newest first.
ALERTS_BY_CREATION = f"{PREFIX}alerts:by-created"

# Hash: "sender|identifier|sent" -> alert id, so an imported CAP message is stored once.
ALERTS_BY_CAP_REFERENCE = f"{PREFIX}alerts:by-cap-ref"


# Stream: append-only audit trail of one alert (never trimmed).
def alert_audit(alert_id: str) -> str:
    return f"{PREFIX}audit:alert:{alert_id}"


# Stream: audit entries not tied to one alert (refused compositions, user management).
SERVICE_AUDIT = f"{PREFIX}audit:service"


# Hash: user name -> fields name, roles (comma-separated), created, token_hash.
def user(name: str) -> str:
    return f"{PREFIX}user:{name}"


USERS = f"{PREFIX}users"  # Set of user names.


# String: sha256 of a bearer token -> user name.
def token(token_hash: str) -> str:
    return f"{PREFIX}token:{token_hash}"


# Hash: registry kind -> current snapshot version (geotarget.registry). Owned by the registry store.
REGISTRY_CURRENT = f"{PREFIX}registry:current"
# Hash: "kind:version" -> manifest JSON (file digests) of every published snapshot.
REGISTRY_MANIFESTS = f"{PREFIX}registry:manifests"
# Hash: "kind:version" -> when and why it was published.
REGISTRY_HISTORY = f"{PREFIX}registry:history"


# String: a provider's access token (WeChat, Weibo, FCM), with a TTL shorter than the token's
# own lifetime; deleted when the provider says the token is invalid.
def provider_token(channel: str) -> str:
    return f"{PREFIX}token:provider:{channel}"


# Hash: webhook partner id -> JSON (url, secret, filters). Owned by the webhook channel.
WEBHOOK_PARTNERS = f"{PREFIX}webhook:partners"

# Sorted set: alert id -> published time, the entries of the public CAP Atom feed.
FEED_ENTRIES = f"{PREFIX}feed:entries"


# String: one published feed entry (JSON: id, title, updated, CAP XML). Owned by the feed.
def feed_entry(alert_id: str) -> str:
    return f"{PREFIX}feed:entry:{alert_id}"


# String: provider message id -> JSON receipt (status, error code, time). Written by status
# callbacks (Twilio) and delivery receipts (SMPP deliver_sm); kept 7 days.
def receipt(provider_ref: str) -> str:
    return f"{PREFIX}receipt:{provider_ref}"


RECEIPT_TTL_SECONDS = 7 * 86400


# String: provider message id -> "<alert id>|<channel>", written when the message is recorded
# sent, deleted when its final receipt is counted (broadcast.receipts); kept one day at most.
def receipt_owner(provider_ref: str) -> str:
    return f"{PREFIX}receipt-owner:{provider_ref}"


# String: provider message id -> "delivered" | "undelivered", for a final receipt that arrived
# before its message was recorded sent (the send is counted then); kept one hour.
def receipt_early(provider_ref: str) -> str:
    return f"{PREFIX}receipt-early:{provider_ref}"


RECEIPT_OWNER_TTL_SECONDS = 86400
RECEIPT_EARLY_TTL_SECONDS = 3600


# Hash: recipient id -> JSON acknowledgement (channel, call_sid, digits, to, time) of one alert;
# the first acknowledgement of a recipient is kept. Written by the Twilio voice callback;
# kept ACK_TTL_SECONDS after the last acknowledgement.
def acknowledgements(alert_id: str) -> str:
    return f"{PREFIX}ack:{alert_id}"


ACK_TTL_SECONDS = 30 * 86400


# Hash: language -> CBC message id being broadcast for one warning chain (the alert and its
# Updates share the CBS message code). Lets an Update or Cancel withdraw exactly what is on
# air even when the severity, and so the message id, changed. Expires with the alert.
def cbc_active(message_code: int) -> str:
    return f"{PREFIX}cbc:active:{message_code}"


# Set: device tokens FCM called unregistered or invalid; the subscriber registry's next
# import drops them, then removes them from here.
INVALID_PUSH_TOKENS = f"{PREFIX}push:invalid-tokens"


# String: who is fetching a provider token right now (a lock; expires by itself).
def provider_token_lock(channel: str) -> str:
    return f"{PREFIX}token:provider:{channel}:lock"


# ---------------------------------------------------------------- fan-out (broadcast/fanout.py, sender.py)

# Hash: "<channel>:<counter>" -> count (broadcast/accounting.py). Owned by the alert: permanent.
def progress(alert_id: str) -> str:
    return f"{PREFIX}progress:{alert_id}"


# Hash: "<channel>:cursor" / "<channel>:total" planning state, "versions", "severity_queue".
def fanout(alert_id: str) -> str:
    return f"{PREFIX}fanout:{alert_id}"


# Lock (redis-py Lock, 60 s timeout): one worker plans a channel of an alert at a time.
def fanout_plan_lock(alert_id: str, channel: str) -> str:
    return f"{PREFIX}fanout:{alert_id}:{channel}:lock"


# Bitmap (subscriber rows) or set (other recipient ids): recipients whose outcome is final.
# TTL dedupe_ttl_seconds, refreshed on each write.
def done(alert_id: str, channel: str) -> str:
    return f"{PREFIX}done:{alert_id}:{channel}"


# Bitmap or set like done(), for recipients the provider accepted: who a Cancel goes to.
def reached(alert_id: str, channel: str) -> str:
    return f"{PREFIX}reached:{alert_id}:{channel}"


# Hash: epoch second -> messages accepted in it (the current rate); TTL 5 minutes.
def sent_per_second(alert_id: str, channel: str) -> str:
    return f"{PREFIX}rate:{alert_id}:{channel}"


# List: JSON entries of recipients that failed for good, and why (capped at 1,000; TTL 30 days).
def dead_letters(alert_id: str) -> str:
    return f"{PREFIX}dead:{alert_id}"


# Hash: GCRA state of one provider account's token bucket (broadcast.ratelimit): tat (theoretical
# arrival time, µs on the Redis clock, when the backlog of granted tokens will have drained) and
# interval (µs per token the backlog is counted in). Expires RATE_BUCKET_GRACE_MS after the backlog
# has drained, when an absent key means exactly the same as the idle bucket. The account name sits in
# a hash tag so the bucket and its AIMD hash share a cluster slot (one script touches both).
def rate_bucket(account: str) -> str:
    return f"{PREFIX}rate:{{{account}}}:gcra"


RATE_BUCKET_GRACE_MS = 2000


# Hash: AIMD state of one provider account (broadcast.ratelimit): cap and current (tokens/s) and
# decreased_at (µs on the Redis clock). Exists only while the account runs below its cap: deleted
# when recovered to the cap, and expires RATE_AIMD_TTL_SECONDS after the last throttle or recovery
# signal (an account idle that long starts again at its cap).
def rate_aimd(account: str) -> str:
    return f"{PREFIX}rate:{{{account}}}:aimd"


RATE_AIMD_TTL_SECONDS = 600


# Sorted sets of one provider account's emission window (broadcast.ratelimit.EmissionWindow); members
# are "<ticket>:<tokens>". rate_sending: chunks admitted and not yet reported written, scored by the
# admission time; rate_sent: chunks reported written, scored by when the report reached Redis (µs,
# Redis clock), kept while they are inside the window. rate_tickets: the counter that numbers them.
def rate_sending(account: str) -> str:
    return f"{PREFIX}rate:{{{account}}}:sending"


def rate_sent(account: str) -> str:
    return f"{PREFIX}rate:{{{account}}}:sent"


def rate_tickets(account: str) -> str:
    return f"{PREFIX}rate:{{{account}}}:tickets"


# Hash: unit code -> linkage task JSON (broadcast.linkage.Task) of one alert. Permanent, like
# the alert record: it is the record of who confirmed their response and when.
def linkage_tasks(alert_id: str) -> str:
    return f"{PREFIX}linkage:tasks:{alert_id}"


# Stream: every change of one alert's linkage tasks (type, unit, task JSON), trimmed to
# broadcast.linkage.EVENTS_KEPT; the supervision stream (SSE) reads it.
def linkage_events(alert_id: str) -> str:
    return f"{PREFIX}linkage:events:{alert_id}"


# Set: ids of alerts that have linkage tasks.
LINKAGE_ALERTS = f"{PREFIX}linkage:alerts"

# Hash: API user name -> comma-separated unit codes that user (role officer) acts for (broadcast.roster).
USER_UNITS = f"{PREFIX}roster:user-units"

# ---------------------------------------------------------------- roster (broadcast/roster.py)
# Owned by the roster: an import replaces all of them in one MULTI/EXEC; permanent until then.

# Hash: officer id -> officer JSON (broadcast.roster.Officer).
ROSTER_OFFICERS = f"{PREFIX}roster:officers"
# Hash: unit code -> JSON list of its officer ids, primaries first, then deputies (file order within a rank).
ROSTER_UNITS = f"{PREFIX}roster:units"
# Hash: phone (E.164, "+86...") -> comma-separated ids of the officers with that SMS or voice number,
# so an SMS reply finds who sent it.
ROSTER_PHONES = f"{PREFIX}roster:phones"
# Hash: source, imported_at, officers, units: what the current roster is.
ROSTER_META = f"{PREFIX}roster:meta"
# Set: API user names the roster bound to units (in USER_UNITS); the next import unbinds those it drops.
ROSTER_USERS = f"{PREFIX}roster:users"

# ---------------------------------------------------------------- acknowledgement links (broadcast/ack_links.py)

# String: the random HMAC key of acknowledgement links when settings.ack_link_secret is unset,
# written once (SET NX) by whichever process needs it first. Permanent: deleting it voids every link.
ACK_LINK_SECRET = f"{PREFIX}ack-link:secret"

# Hash: officer id -> id of the alert the officer was last notified of (an SMS reply acknowledges
# that alert's task). Expires LATEST_NOTICE_TTL_SECONDS after the last notice.
LINKAGE_LATEST_NOTICE = f"{PREFIX}linkage:latest-notice"
LATEST_NOTICE_TTL_SECONDS = 30 * 86400
