"""schemathesis checks for the Gatehouse Admin API (gateway/tests/it/admin.rs loads this file
with SCHEMATHESIS_HOOKS).

The OpenAPI document states the rules the API enforces on a request's own fields (entity
names, the name in the path, page offsets, versions, durations, sizes, integer ranges, the
fields of each entity). A request that is valid by the document may still be refused with 400
for a rule of the configuration as a whole (a route naming a service that does not exist, two
plugins on one scope): a schema cannot state those. This check fails when a schema-valid
request is refused for a rule of the first kind.
"""

import schemathesis

# Messages of refusals for the request's own shape: the entity name rule, the path/body name
# rule, unreadable query strings or paths, and the body not matching the entity's fields and
# types (serde).
OWN_FIELD_MESSAGES = (
    "must be 1-128 characters",
    "must not be empty",
    "given in the path",
    "Failed to deserialize",
    "Cannot parse",
    "unknown field",
    "missing field",
    "invalid type",
    "unknown variant",
    "invalid value",
    "invalid length",
    "invalid duration",
    "invalid size",
    "unknown size unit",
    "has no unit",
    "is too large",
    "body:",
)


@schemathesis.check
def stated_rules_hold(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    errors = body.get("errors") or [{"field": "", "message": body.get("message", "")}]
    for e in errors:
        field, message = e.get("field", ""), e.get("message", "")
        if any(m in message for m in OWN_FIELD_MESSAGES):
            raise AssertionError(
                f"a request valid by the OpenAPI document was refused for a rule of its own fields "
                f"(the document must state it): {field}: {message}"
            )
    return None
