"""The sort event: what the bin reports once per item, whatever the transport."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from smartbin.device.decision import Decision, Prediction


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class SortEvent:
    """One item, one event. ``id`` is unique and survives a crash (at-least-once delivery)."""

    bin_id: str
    decision: str
    confidence: float
    organic_prob: float
    material_probs: dict[str, float]
    model_version: str
    inference_ms: float
    frames: int = 1
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ts: str = field(default_factory=utc_now_iso)

    @classmethod
    def from_prediction(
        cls,
        *,
        bin_id: str,
        prediction: Prediction,
        decision: Decision,
        model_version: str,
        inference_ms: float,
        frames: int,
    ) -> SortEvent:
        return cls(
            bin_id=bin_id,
            decision=decision.label,
            confidence=round(decision.confidence, 4),
            organic_prob=round(prediction.organic_prob, 4),
            material_probs={k: round(v, 4) for k, v in prediction.material_probs().items()},
            model_version=model_version,
            inference_ms=round(inference_ms, 2),
            frames=frames,
        )

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> SortEvent:
        return cls(**payload)
