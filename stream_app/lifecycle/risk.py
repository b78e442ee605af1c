"""Churn risk: the probability that an active customer cancels within 30 days of event time.

An online model (river: survey features, standard scaling, logistic regression) learns
from the stream itself. A labelled example is a customer 30 days on: the features are
snapshot at event time ``t`` (``observe``), the label is whether the customer cancelled in
``(t, t + 30 d]``.
A cancellation settles its customer's pending example at once as a positive
(``cancelled``); an example still pending when the watermark passes ``t + 30 d`` is learnt
as a negative (``advance``). A cancellation arriving after that (a late event, at most
31 days late) finds nothing pending: that example stays a negative, a little label noise.
Everything is driven by event time, so the same events give the same model: river's
logistic regression draws nothing at random, and examples settle in ``(due time, customer
id)`` order.

Memory is bounded: at most one pending example per customer (a customer is observed again
once the previous example has settled) and at most ``max_pending`` in all.
"""

from __future__ import annotations

import heapq
import io
import logging
import pickle
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Final

import msgspec
from river import compose, linear_model, optim, preprocessing

from stream_app.lifecycle.profile import DAY_US, Profile

logger = logging.getLogger(__name__)

# Bump when the dumped shape changes; load refuses versions it does not know.
RISK_FORMAT: Final = 1
HORIZON_US: Final = 30 * DAY_US
RIVER_VERSION: Final = version("river")
DEFAULT_MAX_PENDING: Final = 1_000_000
# What the model reads of the profile's features, and its SGD step: the best with
# ``kpi churn-eval`` on seeds 11 and 12 (docs/metrics.md, churn risk). Adding CSAT, recency
# or frequency lowered the AUC by up to 0.02, steps of 0.005 and 0.02 did no better, and
# every feature at once fell to about 0.53: tenure and recency drift with the simulation's
# age, so their online scaling moves under the weights.
MODEL_FEATURES: Final = ("nps_last", "nps_mean", "nps_none")
LEARNING_RATE: Final = 0.01


class RiskFormatError(ValueError):
    """Dumped model bytes this code cannot read (unknown format version or bad shape)."""


def new_model() -> compose.Pipeline:
    """The untrained model: features selected, standardised online, logistic regression."""
    return compose.Pipeline(
        compose.Select(*MODEL_FEATURES),
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.SGD(LEARNING_RATE)),
    )


@dataclass
class RiskStats:
    """What the bookkeeping did since the model was made (dumped with it)."""

    positives: int = 0
    negatives: int = 0
    dropped_full: int = 0


class _Pending(msgspec.Struct, array_like=True, gc=False):
    customer_id: str
    at_us: int
    values: list[float]


class _Head(msgspec.Struct, array_like=True):
    """The first element of every format's dump (the rest is ignored here)."""

    format: int


class _Dump(msgspec.Struct, array_like=True):
    format: int
    river: str  # the version that pickled the model: another may not read it the same
    model: bytes
    pending: list[_Pending]
    stats: list[int]


class _RiverUnpickler(pickle.Unpickler):
    """Loads only river's own classes and the containers they hold: the bytes come from our
    changelog, and this keeps a corrupted or foreign record from naming any other callable."""

    _PLAIN: Final = {
        ("collections", "OrderedDict"),
        ("collections", "Counter"),
        ("collections", "defaultdict"),
        ("builtins", "float"),
        ("builtins", "int"),
        ("builtins", "dict"),
        ("builtins", "list"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._PLAIN:
            return super().find_class(module, name)
        if module.startswith("river.") and "." not in name:
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__.startswith("river."):
                return found
        raise pickle.UnpicklingError(f"a churn model may not load {module}.{name}")


class ChurnRisk:
    """The model and its pending examples; pure: event time comes in as arguments."""

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.stats = RiskStats()
        self._model = new_model()
        self._pending: dict[str, _Pending] = {}
        # (due time, customer id, snapshot time); an entry whose example has gone (settled
        # by a cancellation or forgotten) is skipped when it comes due.
        self._due: list[tuple[int, str, int]] = []

    @property
    def examples_learnt(self) -> int:
        return self.stats.positives + self.stats.negatives

    @property
    def pending(self) -> int:
        return len(self._pending)

    def has_pending(self, customer_id: str) -> bool:
        return customer_id in self._pending

    def risk(self, features: dict[str, float]) -> float:
        """The probability of a cancellation within 30 days, 0..1 (0.5 before any example)."""
        proba: dict[bool, float] = self._model.predict_proba_one(features)
        return float(proba.get(True, 0.0))

    def risks(self, rows: list[dict[str, float]]) -> list[float]:
        """``risk`` of each row. Rows the model reads alike (equal ``MODEL_FEATURES``) are
        predicted once: the survey features take few distinct values across customers."""
        known: dict[tuple[float, ...], float] = {}
        scores = []
        for features in rows:
            key = tuple([features[name] for name in MODEL_FEATURES])
            score = known.get(key)
            if score is None:
                score = known[key] = self.risk(features)
            scores.append(score)
        return scores

    def observe(self, customer_id: str, now_us: int, profile: Profile) -> bool:
        """Snapshot an active customer's features as an example, unless one is pending;
        True when taken (the features are computed only then)."""
        if customer_id in self._pending:
            return False
        if len(self._pending) >= self.max_pending:
            self.stats.dropped_full += 1
            return False
        features = profile.features(now_us)
        values = [features[name] for name in MODEL_FEATURES]
        self._pending[customer_id] = _Pending(customer_id, now_us, values)
        heapq.heappush(self._due, (now_us + HORIZON_US, customer_id, now_us))
        return True

    def cancelled(self, customer_id: str, t_us: int) -> None:
        """A cancellation at ``t_us``: the customer's pending example is a positive if it was
        taken before the cancellation (one taken at or after it is dropped)."""
        example = self._pending.pop(customer_id, None)
        if example is None:
            return
        if example.at_us < t_us <= example.at_us + HORIZON_US:
            self._learn(example, label=True)
        elif t_us > example.at_us + HORIZON_US:
            # advance() was not called up to here: the example had run its 30 days.
            self._learn(example, label=False)

    def advance(self, watermark_us: int) -> int:
        """Learn every example whose 30 days have passed as a negative: due before
        ``watermark_us`` (a cancellation at the due instant itself may still come in the
        same batch); returns how many."""
        learnt = 0
        due = self._due
        while due and due[0][0] < watermark_us:
            _, customer_id, at_us = heapq.heappop(due)
            example = self._pending.get(customer_id)
            if example is None or example.at_us != at_us:
                continue
            del self._pending[customer_id]
            self._learn(example, label=False)
            learnt += 1
        if len(due) > 2 * len(self._pending) + 1024:
            # Many skipped entries (forgotten customers, early positives): rebuild.
            self._due = [entry for entry in due if self._is_live(entry)]
            heapq.heapify(self._due)
        return learnt

    def forget(self, customer_id: str) -> bool:
        """Drop the customer's pending example (``kpi forget``); True if there was one."""
        return self._pending.pop(customer_id, None) is not None

    def _is_live(self, entry: tuple[int, str, int]) -> bool:
        example = self._pending.get(entry[1])
        return example is not None and example.at_us == entry[2]

    def _learn(self, example: _Pending, *, label: bool) -> None:
        features = dict(zip(MODEL_FEATURES, example.values, strict=True))
        self._model.learn_one(features, label)
        if label:
            self.stats.positives += 1
        else:
            self.stats.negatives += 1

    # -- persistence ---------------------------------------------------------------------

    def dump(self) -> bytes:
        """The model (river's own form: a pickle), pending examples and stats, versioned."""
        stats = self.stats
        return msgspec.msgpack.encode(
            _Dump(
                RISK_FORMAT,
                RIVER_VERSION,
                pickle.dumps(self._model, protocol=pickle.HIGHEST_PROTOCOL),
                sorted(self._pending.values(), key=lambda p: (p.at_us, p.customer_id)),
                [stats.positives, stats.negatives, stats.dropped_full],
            )
        )

    @classmethod
    def load(cls, data: bytes, max_pending: int = DEFAULT_MAX_PENDING) -> ChurnRisk:
        """Read ``dump``'s bytes, which must come from our own changelog; raises
        RiskFormatError for an unknown format or anything that is not such a dump."""
        try:
            head = msgspec.msgpack.decode(data, type=_Head)
        except (msgspec.DecodeError, ValueError) as exc:
            raise RiskFormatError(f"not a dumped churn model: {exc}") from None
        if head.format != RISK_FORMAT:
            raise RiskFormatError(
                f"churn model format {head.format} is unknown to this version (it reads format "
                f"{RISK_FORMAT}); upgrade the worker, or drop the model's changelog record "
                "so that it learns afresh"
            )
        try:
            dumped = msgspec.msgpack.decode(data, type=_Dump)
        except (msgspec.DecodeError, ValueError) as exc:
            raise RiskFormatError(f"churn model format {RISK_FORMAT}: {exc}") from None
        if dumped.river != RIVER_VERSION:
            raise RiskFormatError(
                f"the churn model was saved by river {dumped.river}, this worker has river "
                f"{RIVER_VERSION}; install river {dumped.river}, or drop the model's "
                "changelog record so that it learns afresh"
            )
        try:
            model = _RiverUnpickler(io.BytesIO(dumped.model)).load()
        except Exception as exc:  # whatever a damaged pickle raises, it is a refusal
            raise RiskFormatError(f"churn model format {RISK_FORMAT}: {exc!r}") from None
        if not isinstance(model, compose.Pipeline) or len(dumped.stats) != 3:
            raise RiskFormatError(f"churn model format {RISK_FORMAT}: not the expected model")
        loaded = cls(max_pending)
        loaded._model = model
        loaded.stats = RiskStats(*dumped.stats)
        for example in dumped.pending:
            if len(example.values) != len(MODEL_FEATURES):
                raise RiskFormatError("churn model: a pending example has the wrong features")
            loaded._pending[example.customer_id] = example
            loaded._due.append((example.at_us + HORIZON_US, example.customer_id, example.at_us))
        heapq.heapify(loaded._due)
        return loaded
