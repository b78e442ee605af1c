"""The intake fast path, where it was built: plain messages straight to stored events.

``fast_stored`` (``_intake.c``, an optional extension built by the package install) reads
the common message shape straight from its bytes, or answers None, and the message then
takes ``schemas.parse_event`` (the events' one declaration) and ``timeline.stored``. Where no
C compiler was at hand, ``fast_stored`` is None and every message takes that path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FastStored = Callable[[str, bytes | None, bytes | None, str], tuple[str, list[Any]] | None]

fast_stored: FastStored | None
try:
    from stream_app.customers._intake import fast_stored
except ImportError:  # installed without a C compiler: the declared path alone, slower
    fast_stored = None
