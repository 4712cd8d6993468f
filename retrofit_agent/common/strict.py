"""The one strict base model, and the one way a validation error becomes a message.

Every contract and config section is a `StrictModel`: an unknown key is an error (a typo in a
fleet's config or a bundle from a newer builder fails loudly instead of being ignored), and a
validated value cannot be changed behind the validator's back.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from retrofit_agent.errors import printable


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def first_error(exc: ValidationError, document: str = "document") -> str:
    """The first problem as `dotted.key: what is wrong` (`document` when it has no key)."""
    err = exc.errors()[0]
    where = ".".join(printable(part) for part in err["loc"]) or document
    return f"{where}: {err['msg']}"
