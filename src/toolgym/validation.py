"""pydantic validation errors as people read them: one `field.path: message` per problem, not pydantic's dump."""

from __future__ import annotations

from pydantic import ValidationError


def problems(exc: ValidationError, root: str = "") -> list[str]:
    """Each error of `exc` as `loc: message`; `root` names a problem of the whole object (an empty location)."""
    return [f"{'.'.join(map(str, e['loc'])) or root}: {e['msg']}" for e in exc.errors()]
