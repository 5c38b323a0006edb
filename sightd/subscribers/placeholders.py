"""`{label}`-style placeholders in user templates, filled without str.format's reach.

str.format would let a template say `{label.__class__}` or `{scores[x]}`; here a field is only
one of NAMES, with an optional format spec (`{confidence:.2f}`), and a value is inserted as
text: whatever a label contains stays data, inside the one argument that holds it.
"""

from __future__ import annotations

import string
import time
from typing import Any

NAMES = ("label", "camera", "confidence", "at", "previous")
SAMPLE = {"label": "x", "camera": "cam0", "confidence": 0.5, "at": "t", "previous": "y"}
_FORMATTER = string.Formatter()


def check_template(template: str) -> str:
    """Raise ValueError naming the problem unless `template` uses only known placeholders."""
    try:
        fields = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"{template!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in NAMES or conversion is not None:
            known = ", ".join(f"{{{n}}}" for n in NAMES)
            raise ValueError(f"{template!r}: unknown placeholder {{{name}}}; known: {known}")
        if "{" in spec:
            raise ValueError(f"{template!r}: nested placeholders are not supported")
    render(template, SAMPLE)  # a bad format spec such as {confidence:q} fails here, not later
    return template


def render(template: str, values: dict[str, Any]) -> str:
    out = []
    for literal, name, spec, _ in _FORMATTER.parse(template):
        out.append(literal)
        if name is not None:
            out.append(format(values[name], spec or ""))
    return "".join(out)


def message_values(message: dict[str, Any]) -> dict[str, Any]:
    """The placeholder values of a label or event message."""
    when = message.get("at", message.get("captured_at", 0.0))
    return {
        "label": str(message.get("label", "")),
        "camera": str(message.get("camera", "")),
        "confidence": float(message.get("confidence", 0.0)),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(when)),
        "previous": str(message.get("previous") or ""),
    }
