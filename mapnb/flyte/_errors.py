"""flytekit's input type error as mapnb's :class:`~mapnb.NotRetried` (imports flytekit:
:mod:`._flytekit` imports this module only when an item's inputs fail flytekit's check)."""

from __future__ import annotations

from flytekit.core.type_engine import TypeTransformerFailedError as _FlytekitError

from ..errors import NotRetried


class TypeTransformerFailedError(_FlytekitError, NotRetried):
    """flytekit's ``TypeTransformerFailedError`` for an item's inputs, and a
    :class:`~mapnb.NotRetried`: the same inputs fail the same way on every attempt, so the
    item fails at once. Named as flytekit's, so the ``error`` column reads as flytekit's
    (``except flytekit...TypeTransformerFailedError`` still catches it)."""
