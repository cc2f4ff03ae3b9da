"""The OpenAPI 3.1 document the service serves at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from broadcast.model import Category, Certainty, ResponseType, Scope, Severity, Status, Urgency
from broadcast.records import State
from broadcast.settings import Settings
from broadcast.users import Role


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _enum(values: Any) -> dict[str, Any]:
    return {"type": "string", "enum": [v.value for v in values]}


STRING = {"type": "string"}
TIME = {"type": "string", "format": "date-time", "description": "ISO 8601 with a UTC offset"}
NAMED_VALUE = {"type": "object", "required": ["value_name", "value"], "additionalProperties": False,
               "properties": {"value_name": STRING, "value": STRING}}
POSITION = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
            "description": "[lon, lat]"}
RING = {"type": "array", "items": POSITION, "minItems": 4, "description": "closed: the last position repeats the first"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": STRING, "message": STRING,
            "field": {"type": "string", "description": "path of the field at fault, e.g. info[0].headline"}}}},
    },
    "NamedValue": NAMED_VALUE,
    "Area": {
        "type": "object", "required": ["desc"], "additionalProperties": False,
        "properties": {
            "desc": STRING,
            "geometry": {"type": "object", "description": "GeoJSON Polygon or MultiPolygon without holes",
                         "properties": {"type": {"enum": ["Polygon", "MultiPolygon"]},
                                        "coordinates": {"type": "array"}}},
            "circles": {"type": "array", "items": {"type": "object", "required": ["lon", "lat", "radius_km"],
                                                   "properties": {"lon": {"type": "number"},
                                                                  "lat": {"type": "number"},
                                                                  "radius_km": {"type": "number", "minimum": 0}}}},
            "geocodes": {"type": "array", "items": _ref("NamedValue"),
                         "description": "administrative units: value_name 'adcode', value e.g. '440304'"},
            "altitude": {"type": "number"}, "ceiling": {"type": "number"},
        },
    },
    "Resource": {
        "type": "object", "required": ["desc", "mime_type"], "additionalProperties": False,
        "properties": {"desc": STRING, "mime_type": STRING, "size": {"type": "integer"}, "uri": STRING,
                       "deref_uri": STRING, "digest": STRING},
    },
    "Info": {
        "type": "object", "additionalProperties": False,
        "required": ["language", "categories", "event", "urgency", "severity", "certainty"],
        "properties": {
            "language": STRING,
            "categories": {"type": "array", "items": _enum(Category), "minItems": 1},
            "event": STRING,
            "response_types": {"type": "array", "items": _enum(ResponseType)},
            "urgency": _enum(Urgency), "severity": _enum(Severity), "certainty": _enum(Certainty),
            "audience": STRING, "event_codes": {"type": "array", "items": _ref("NamedValue")},
            "effective": TIME, "onset": TIME, "expires": TIME,
            "sender_name": STRING, "headline": STRING, "description": STRING, "instruction": STRING,
            "web": STRING, "contact": STRING,
            "parameters": {"type": "array", "items": _ref("NamedValue")},
            "resources": {"type": "array", "items": _ref("Resource")},
            "areas": {"type": "array", "items": _ref("Area")},
        },
    },
    "Alert": {
        "type": "object", "description": "A CAP 1.2 alert message in JSON (CAP names in snake case)",
        "required": ["identifier", "sender", "sent", "status", "msg_type", "scope"],
        "properties": {
            "identifier": STRING, "sender": STRING, "sent": TIME, "status": _enum(Status),
            "msg_type": {"type": "string", "enum": ["Alert", "Update", "Cancel"]}, "scope": _enum(Scope),
            "source": STRING, "restriction": STRING, "addresses": STRING,
            "codes": {"type": "array", "items": STRING}, "note": STRING, "incidents": STRING,
            "references": {"type": "array", "items": {"type": "object", "properties": {
                "sender": STRING, "identifier": STRING, "sent": TIME}}},
            "info": {"type": "array", "items": _ref("Info")},
        },
    },
    "Composition": {
        "type": "object", "additionalProperties": False,
        "description": "What a forecaster sends to draft an alert. A signal fills every CAP field that follows "
                       "from it; info entries (matched by language) override. Top-level areas and times apply "
                       "to every language.",
        "properties": {
            "signal": {"type": "object", "required": ["hazard", "level"],
                       "properties": {"hazard": {"type": "string", "example": "rainstorm"},
                                      "level": {"type": "string", "enum": ["white", "blue", "yellow", "orange",
                                                                           "red"]}}},
            "languages": {"type": "array", "items": STRING},
            "status": _enum(Status), "scope": _enum(Scope), "source": STRING, "restriction": STRING,
            "addresses": STRING, "codes": {"type": "array", "items": STRING}, "note": STRING, "incidents": STRING,
            "effective": TIME, "onset": TIME, "expires": TIME,
            "areas": {"type": "array", "items": _ref("Area")},
            "info": {"type": "array", "items": {"type": "object", "description": "any Info field, keyed by language"}},
        },
    },
    "Stamp": {"type": "object", "properties": {"by": STRING, "at": TIME}},
    "TargetArea": {
        "type": "object", "additionalProperties": False,
        "description": "One of geometry, circle(s) or geocodes (bare strings are adcodes), or several together",
        "properties": {
            "desc": STRING,
            "geometry": {"type": "object", "description": "GeoJSON Polygon or MultiPolygon, [lon, lat]"},
            "circle": {"type": "object", "properties": {"lon": {"type": "number"}, "lat": {"type": "number"},
                                                        "radius_km": {"type": "number"}}},
            "geocodes": {"type": "array", "items": {"oneOf": [STRING, _ref("NamedValue")]}},
        },
    },
    "UnitCoverage": {
        "type": "object",
        "properties": {"level": {"enum": ["city", "district", "street", "community"]}, "code": STRING,
                       "name": STRING, "name_en": STRING, "parent": {"type": ["string", "null"]},
                       "coverage": {"type": "number", "description": "fraction of the unit's area covered"},
                       "edge": {"type": "boolean", "description": "covered less than edge_coverage_fraction"},
                       "population": {"type": "integer"}},
    },
    "Resolution": {
        "type": "object",
        "properties": {
            "units": {"type": "array", "items": _ref("UnitCoverage")},
            "tree": {"type": ["object", "null"], "description": "city -> districts -> streets -> communities"},
            "levels": {"type": "object", "additionalProperties": {"type": "integer"}},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"},
                       "description": "per channel (sms, app_push, cell_broadcast, ...) and subscribers"},
            "estimates": {"type": "object", "description": "per channel: count, rate_per_second, seconds"},
            "notices": {"type": "array", "items": {"type": "object"}},
            "registries": {"type": "object", "description": "snapshot versions used"},
        },
    },
    "Unit": {
        "type": "object",
        "properties": {"code": STRING, "level": STRING, "name": STRING, "name_en": STRING,
                       "parent": {"type": ["string", "null"]}, "population": {"type": "integer"},
                       "geometry": {"type": "object", "description": "GeoJSON (only on /api/units/{code})"},
                       "children": {"type": "array", "items": STRING},
                       "ancestors": {"type": "array", "items": STRING}},
    },
    "AlertRecord": {
        "type": "object",
        "properties": {
            "id": STRING, "state": _enum(State), "origin": {"enum": ["composed", "imported"]},
            "alert": _ref("Alert"), "signal": {"type": ["string", "null"], "example": "rainstorm.red"},
            "composition": {"oneOf": [_ref("Composition"), {"type": "null"}]},
            "findings": {"type": "array", "description": "what blocks submission",
                         "items": {"type": "object", "properties": {"code": STRING, "field": STRING,
                                                                    "message": STRING}}},
            "created": _ref("Stamp"), "edited_by": {"type": "array", "items": STRING},
            "submitted": _ref("Stamp"), "approved": _ref("Stamp"),
            "closed": _ref("Stamp"),
            "rejection": {"type": ["object", "null"]}, "replaces": {"type": ["string", "null"]},
            "replaced_by": {"type": ["string", "null"]}, "urgent": {"type": "boolean"},
            "dissemination": {"type": ["object", "null"]}, "version": {"type": "integer"},
        },
    },
    "LinkageTask": {
        "type": ["object", "null"], "description": "null for a unit shown only as the parent of units with tasks",
        "properties": {"state": {"enum": ["open", "acknowledged", "closed"]},
                       "status": {"enum": ["received", "linkage_started", "cannot_comply", None]},
                       "opened_at": {"type": "number", "description": "epoch seconds, like every time here"},
                       "deadline": {"type": "number"}, "acknowledged_at": {"type": ["number", "null"]},
                       "seconds_to_acknowledge": {"type": ["number", "null"]},
                       "acknowledged_by": {"type": "array", "items": STRING}, "note": STRING,
                       "overdue": {"type": "boolean", "description": "open at or past its deadline"},
                       "late": {"type": "boolean", "description": "acknowledged after its deadline"},
                       "escalation": {"type": "integer", "description": "0 none, 1 deputy, 2 supervising unit"},
                       "last_contact": {"type": ["object", "null"]}, "closed_reason": STRING,
                       "version": {"type": "integer", "description": "grows with every change of the task"}}},
    "LinkageTaskRecord": {
        "type": "object", "description": "one unit's task as stored (broadcast.linkage.Task), times in epoch seconds",
        "properties": {"alert_id": STRING, "unit": STRING, "name": STRING, "name_en": STRING,
                       "level": {"enum": ["city", "district", "street", "community"]},
                       "parent": {"type": ["string", "null"]}, "opened_at": {"type": "number"},
                       "deadline": {"type": "number"}, "state": {"enum": ["open", "acknowledged", "closed"]},
                       "status": {"enum": ["received", "linkage_started", "cannot_comply", None]},
                       "overdue": {"type": "boolean"},
                       "acknowledgements": {"type": "array", "items": {"type": "object", "properties": {
                           "officer": STRING, "at": {"type": "number"},
                           "via": {"enum": ["link", "api", "sms", "voice"]},
                           "status": {"enum": ["received", "linkage_started", "cannot_comply"]}, "note": STRING}}},
                       "contacts": {"type": "array", "items": {"type": "object", "properties": {
                           "kind": {"enum": ["notice", "reminder", "escalation"]}, "at": {"type": "number"},
                           "officer": {"type": ["string", "null"]}, "channel": STRING, "unit": STRING}}},
                       "escalation": {"type": "integer", "description": "0 none, 1 deputy, 2 supervising unit"},
                       "closed_reason": STRING, "version": {"type": "integer"},
                       "changed": {"type": "boolean", "description": "on acknowledge: whether the answer was new"}},
    },
    "LinkageRollup": {
        "type": "object",
        "properties": {**{name: {"type": "integer"} for name in (
            "total", "acknowledged", "received", "linkage_started", "cannot_comply", "open", "overdue", "closed",
            "late")},
            "percent_confirmed": {"type": ["number", "null"], "description": "acknowledged (any status) / total"},
            "median_seconds_to_acknowledge": {"type": ["number", "null"]}},
    },
    "LinkageRollups": {
        "type": "object",
        "properties": {"all": _ref("LinkageRollup"),
                       "levels": {"type": "object", "additionalProperties": _ref("LinkageRollup")}},
    },
    "LinkageNode": {
        "type": "object",
        "properties": {"code": STRING, "level": STRING, "name_zh": STRING, "name_en": STRING,
                       "parent": {"type": ["string", "null"]}, "task": _ref("LinkageTask"),
                       "rollup": {**_ref("LinkageRollups"), "description": "the subtree's (nodes with children)"},
                       "children": {"type": "array", "items": _ref("LinkageNode")}},
    },
    "LinkageView": {
        "type": "object",
        "properties": {"alert_id": STRING, "now": {"type": "number"},
                       "tree": {"type": "array", "items": _ref("LinkageNode"),
                                "description": "the roots: the city, or the officer's units"},
                       "rollups": _ref("LinkageRollups")},
    },
    "AuditEntry": {
        "type": "object",
        "properties": {"at": TIME, "actor": STRING, "action": STRING, "outcome": {"enum": ["ok", "refused"]},
                       "remote": STRING, "alert_id": STRING, "from_state": STRING, "to_state": STRING,
                       "detail": STRING},
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "malformed body", 401: "no or unknown token", 403: "wrong role or the two-person rule",
            404: "unknown alert", 409: "the alert's state does not allow this", 413: "body over the size limit",
            422: "a field is invalid (named in error.field)"}
    return {str(c): {"description": text[c], "content": _json(_ref("Error"))} for c in codes}


def _op(summary: str, roles: str, ok: int, ok_schema: dict[str, Any], *errors: int,
        body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Roles: {roles}.",
        "responses": {str(ok): {"description": "done", "content": _json(ok_schema)}, **_errors(401, *errors)},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    return op


ID = [{"name": "id", "in": "path", "required": True, "schema": STRING}]
UNIT = {"name": "unit", "in": "path", "required": True, "schema": STRING, "description": "gazetteer code"}
ACK_BODY = {"type": "object", "required": ["status"], "additionalProperties": False, "properties": {
    "status": {"enum": ["received", "linkage_started", "cannot_comply"]},
    "note": {"type": "string", "maxLength": 500, "description": "what was started; required for cannot_comply"}}}
REASON = _json({"type": "object", "required": ["reason"], "properties": {"reason": STRING}})


_LINKAGE_ROLES = "any; an officer sees the subtrees of the units they act for (403 when none)"
SUPERVISION_PATHS: dict[str, Any] = {  # broadcast/supervision_api.py
    "/api/alerts/{id}/linkage": {"parameters": ID, "get": _op(
        "the alert's linkage tree city -> districts -> streets -> communities (units with a task and their "
        "ancestors), each node with its task's state, status, time to acknowledge, deadline, overdue and late "
        "flags, escalation and last contact, subtree rollups on nodes with children; rollups per level. Callers "
        "with the same scope share a view for 0.5 s ('now' says when it was made); the stream is exact",
        _LINKAGE_ROLES, 200, _ref("LinkageView"), 403, 404)},
    "/api/alerts/{id}/linkage/stream": {"parameters": ID, "get": {
        "summary": "server-sent events: a snapshot (as GET .../linkage), then every change of a task in the "
                   "caller's scope (event id = Redis stream id: reconnect with Last-Event-ID to resume exactly), "
                   "rollups at most once a second, ': keepalive' comments",
        "description": f"Roles: {_LINKAGE_ROLES}. The bearer token may also come as ?access_token= (EventSource "
                       "cannot send headers; query strings reach access logs, so prefer the header).",
        "parameters": [{"name": "access_token", "in": "query", "schema": STRING},
                       {"name": "Last-Event-ID", "in": "header", "schema": STRING}],
        "responses": {"200": {"description": "the event stream", "content": {"text/event-stream": {
            "schema": STRING, "example": "id: 1767225600000-0\nevent: change\ndata: {\"type\": \"acknowledged\", "
                                         "\"unit\": \"440304\", \"node\": {}}\n\n"}}},
                      **_errors(401, 403, 404, 422)}}},
    "/linkage/{id}": {"parameters": ID, "get": {
        "summary": "the live linkage page (HTML; asks for a token, then follows the stream)", "security": [],
        "responses": {"200": {"description": "text/html"}}}},
}


def openapi_document(settings: Settings) -> dict[str, Any]:
    record = _ref("AlertRecord")
    paths = {
        "/healthz": {"get": {"summary": "200 once the service can take alerts", "security": [],
                             "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        "/api/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics: recipients per alert, channel and state; rates; ETAs; "
                                        "queue lengths; rate-limiter state (text format 0.0.4)",
                             "description": "Roles: any (scrape with a token).",
                             "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
        "/api/signals": {"get": _op("the warning-signal catalogue", "any", 200, {"type": "object"})},
        "/api/alerts": {
            "get": {**_op("list alerts, newest first", "any", 200, {"type": "object"}, 422),
                    "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 500}},
                                   {"name": "offset", "in": "query", "schema": {"type": "integer"}}]},
            "post": _op("draft an alert from a composition request (JSON) or import a CAP 1.2 message (XML)",
                        "forecaster", 201, record, 400, 403, 409, 413, 422,
                        body={**_json(_ref("Composition")),
                              "application/cap+xml": {"schema": {"type": "string"}}}),
        },
        "/api/alerts/{id}": {
            "parameters": ID,
            "get": _op("one alert with its workflow state", "any", 200, record, 404),
            "patch": _op("change a draft (top-level fields replace; info merges by language)", "forecaster", 200,
                         record, 400, 403, 404, 409, 422, body=_json(_ref("Composition"))),
        },
        "/api/alerts/{id}/submit": {"parameters": ID, "post": _op(
            "submit a draft for approval", "forecaster", 200, record, 403, 404, 409)},
        "/api/alerts/{id}/approve": {"parameters": ID, "post": _op(
            "approve and issue (a different person from the drafter and submitter; urgent cancels excepted)",
            "approver", 200, record, 403, 404, 409)},
        "/api/alerts/{id}/reject": {"parameters": ID, "post": _op(
            "send a submitted alert back to draft with a reason", "approver", 200, record, 403, 404, 409, 422,
            body=REASON)},
        "/api/alerts/{id}/update": {"parameters": ID, "post": _op(
            "compose an Update of an issued alert (fields as in PATCH); it awaits approval", "forecaster", 201,
            record, 403, 404, 409, 422, body=_json(_ref("Composition")))},
        "/api/alerts/{id}/cancel": {"parameters": ID, "post": _op(
            "request a Cancel of an issued alert; urgent ones may be approved by any approver", "forecaster, approver",
            201, record, 403, 404, 409, 422,
            body=_json({"type": "object", "required": ["reason"],
                        "properties": {"reason": STRING, "urgent": {"type": "boolean"}}}))},
        "/api/alerts/{id}/cap": {"parameters": ID, "get": {
            "summary": "the alert as CAP 1.2 XML", "description": "Roles: any.",
            "responses": {"200": {"description": "CAP", "content": {"application/cap+xml": {"schema": STRING}}},
                          **_errors(401, 404)}}},
        "/api/targeting/resolve": {"post": _op(
            "resolve areas to units at four levels, subscribers, cells, screens, stations and loudspeakers",
            "any", 200, _ref("Resolution"), 400, 404, 422,
            body=_json({"type": "object", "required": ["areas"],
                        "properties": {"areas": {"type": "array", "items": _ref("TargetArea")}}}))},
        "/api/units": {"get": {**_op("units of the gazetteer (no geometry)", "any", 200, {"type": "object"}, 404, 422),
                               "parameters": [{"name": "level", "in": "query", "schema": STRING},
                                              {"name": "parent", "in": "query", "schema": STRING}]}},
        "/api/units/{code}": {
            "parameters": [{"name": "code", "in": "path", "required": True, "schema": STRING}],
            "get": _op("one unit with its polygon as GeoJSON", "any", 200, _ref("Unit"), 404)},
        "/api/alerts/{id}/preview": {"parameters": ID, "get": _op(
            "every channel's rendered text per language, its length, SMS segments or CBS pages, and whether it fits",
            "any", 200, {"type": "object"}, 404)},
        "/api/callbacks/twilio/status": {"post": {
            "summary": "Twilio status callback (form-encoded) -> delivery receipt", "security": [],
            "description": "No bearer token: checked by X-Twilio-Signature instead.",
            "responses": {"204": {"description": "recorded"}, "403": {"description": "bad signature"}}}},
        "/api/callbacks/twilio/voice": {"post": {
            "summary": "Twilio <Gather> keypress (Digits=1 acknowledges); answers TwiML", "security": [],
            "description": "No bearer token: checked by X-Twilio-Signature instead.",
            "responses": {"200": {"description": "TwiML"}, "403": {"description": "bad signature"}}}},
        "/api/callbacks/twilio/sms": {"post": {
            "summary": "Twilio inbound SMS (From, Body): an officer's reply '1' / '2 note' / '3 reason' acknowledges "
                       "their unit's task of the alert they were last notified of; answers TwiML with the reply",
            "security": [], "description": "No bearer token: checked by X-Twilio-Signature instead.",
            "responses": {"200": {"description": "TwiML <Message>"}, "403": {"description": "bad signature"}}}},
        "/api/alerts/{id}/linkage/{unit}": {
            "parameters": [*ID, UNIT], "get": _op(
                "one unit's linkage task: state, deadline, acknowledgements, contacts, escalation",
                "any; an officer only for their own units and those below", 200, _ref("LinkageTaskRecord"), 403, 404)},
        "/api/alerts/{id}/linkage/{unit}/acknowledge": {
            "parameters": [*ID, UNIT], "post": _op(
                "acknowledge the unit's task (again with the same answer: no change)",
                "officer bound to the unit", 200, _ref("LinkageTaskRecord"), 400, 403, 404, 409, 422,
                body=_json(ACK_BODY))},
        "/ack/{token}": {
            "parameters": [{"name": "token", "in": "path", "required": True, "schema": STRING,
                            "description": "signed by the service: alert, unit, officer, expiry"}],
            "get": {"summary": "the officer's acknowledgement page (HTML, zh-CN + en): the warning and a form",
                    "security": [], "responses": {
                        "200": {"description": "the page", "content": {"text/html": {"schema": STRING}}},
                        "403": {"description": "forged or altered link, or the officer no longer on duty for the unit"},
                        "404": {"description": "no such alert or task"},
                        "410": {"description": "the link expired with its alert"}}},
            "post": {"summary": "acknowledge by the link: form (status, note) answers the page, JSON answers JSON",
                     "security": [],
                     "requestBody": {"required": True, "content": {
                         "application/x-www-form-urlencoded": {"schema": ACK_BODY}, **_json(ACK_BODY)}},
                     "responses": {
                         "200": {"description": "recorded", "content": {"text/html": {"schema": STRING},
                                                                        **_json(_ref("LinkageTaskRecord"))}},
                         "403": {"description": "forged or altered link"}, "404": {"description": "no such task"},
                         "409": {"description": "the alert was cancelled, updated or expired"},
                         "410": {"description": "the link expired"},
                         "422": {"description": "bad status, or the note too long / missing for cannot_comply"}}}},
        "/feed/cap.atom": {"get": {
            "summary": "public Atom feed of active CAP alerts (ETag / If-None-Match; ?lang=en)", "security": [],
            "responses": {"200": {"description": "Atom 1.0",
                                  "content": {"application/atom+xml": {"schema": STRING}}},
                          "304": {"description": "not modified"}}}},
        "/feed/cap/{alert_id}.xml": {"get": {
            "summary": "one active alert's CAP XML (public)", "security": [],
            "parameters": [{"name": "alert_id", "in": "path", "required": True, "schema": STRING}],
            "responses": {"200": {"description": "CAP 1.2", "content": {"application/cap+xml": {"schema": STRING}}},
                          "304": {"description": "not modified"}, "404": {"description": "not in the feed"}}}},
        "/api/alerts/{id}/progress": {"parameters": ID, "get": _op(
            "per channel: targeted, queued, sent, failed, suppressed, delivered, pending, rate, ETA",
            "any", 200, {"type": "object"}, 404)},
        "/api/alerts/{id}/audit": {"parameters": ID, "get": _op(
            "the alert's append-only audit trail", "forecaster, approver, ops, admin", 200,
            {"type": "object", "properties": {"entries": {"type": "array", "items": _ref("AuditEntry")}}}, 403, 404)},
        **SUPERVISION_PATHS,
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Emergency alert broadcast service", "version": "0.1.0",
                 "description": "Compose, approve (two-person rule), issue, update and cancel CAP 1.2 warnings. "
                                f"Roles: {', '.join(r.value for r in Role)}."},
        "servers": [{"url": settings.base_url}],
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
        "paths": paths,
    }
