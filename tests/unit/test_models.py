"""The offline model: deterministic, seedable, with latency in range and token usage."""

from __future__ import annotations

import pytest

from agentrt.runtime import Model, ModelConfig, OfflineModel, model_from_config

MSG = [{"role": "user", "content": "Compare actor runtimes for agent fan-out"}]


def test_same_seed_same_answer_other_seed_other_answer() -> None:
    a = OfflineModel(seed=1, latency_s=(0, 0)).complete(MSG)
    b = OfflineModel(seed=1, latency_s=(0, 0)).complete(MSG)
    c = OfflineModel(seed=2, latency_s=(0, 0)).complete(MSG)
    assert a == b
    assert a.text != c.text
    assert a.usage.input_tokens > 0 and a.usage.output_tokens > 0
    assert "actor" in a.text or "runtimes" in a.text


def test_latency_is_deterministic_and_in_range() -> None:
    m = OfflineModel(seed=3, latency_s=(1.0, 2.0))
    values = [m.latency_for(None, f"prompt {i}") for i in range(50)]
    assert all(1.0 <= v <= 2.0 for v in values)
    assert values == [m.latency_for(None, f"prompt {i}") for i in range(50)]
    assert len(set(values)) > 40


def test_config_and_protocol() -> None:
    model = model_from_config(ModelConfig(seed=4, latency_s=(0, 0)))
    assert isinstance(model, Model)
    with pytest.raises(ValueError, match="model kind 'gpt' is not available"):
        model_from_config(ModelConfig(kind="gpt"))
    with pytest.raises(ValueError, match="latency_s"):
        OfflineModel(latency_s=(2.0, 1.0))
