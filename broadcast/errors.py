"""The service's own exception tree.

Every error a user can cause is one of these; the API's error middleware renders
them as JSON with their HTTP status, and the CLI prints them and exits non-zero.
Library errors are translated at the boundary with ``raise ... from exc``.

    BroadcastError
     ├── InvalidInput          422  a field's value breaks a rule (names the field)
     │    └── MalformedInput   400  the body cannot be parsed at all (JSON, XML)
     │         └── UnsafeXml   400  hostile XML: DTDs, entities, external references
     ├── PayloadTooLarge       413
     ├── Unauthenticated       401  no or unknown bearer token
     ├── Forbidden             403  wrong role, or the two-person rule
     ├── NotFound              404
     ├── Conflict              409  the alert's state does not allow the action
     └── DeliveryError              raised by channel adapters (later pipeline stages)
          ├── TransientDeliveryError   retry with backoff
          └── PermanentDeliveryError   record and move on
"""

from __future__ import annotations


class BroadcastError(Exception):
    """Base of every error this service raises on purpose."""

    status: int = 500
    code: str = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    def at(self, prefix: str) -> BroadcastError:
        """Return a copy whose field path is nested under ``prefix`` (``info[0]`` + ``headline``)."""
        if self.field is None:
            path = prefix
        elif self.field.startswith("["):
            path = f"{prefix}{self.field}"
        else:
            path = f"{prefix}.{self.field}" if prefix else self.field
        return type(self)(self.message, field=path)


class InvalidInput(BroadcastError):
    status = 422
    code = "invalid"


class MalformedInput(InvalidInput):
    status = 400
    code = "malformed"


class UnsafeXml(MalformedInput):
    code = "unsafe_xml"


class PayloadTooLarge(BroadcastError):
    status = 413
    code = "too_large"


class Unauthenticated(BroadcastError):
    status = 401
    code = "unauthenticated"


class Forbidden(BroadcastError):
    status = 403
    code = "forbidden"


class NotFound(BroadcastError):
    status = 404
    code = "not_found"


class Conflict(BroadcastError):
    status = 409
    code = "conflict"


class DeliveryError(BroadcastError):
    code = "delivery"


class TransientDeliveryError(DeliveryError):
    """The channel or provider is down or throttling; the same send may succeed later."""

    code = "transient"


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help (bad address, rejected content); record the reason."""

    code = "permanent"
