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


def test_a_refused_call_reports_the_whole_requests_need_so_asking_again_with_it_fits() -> None:
    # bench/multihost.py's synthesis failed once with "needs up to 2124 tokens ... has 1000
    # left": its request had already spent 1124 of a 2124 allowance, so the need it reported
    # (2124) was no more than the allowance the run had just reserved, and the run gave up
    # instead of asking again with room for the earlier calls too.
    from agentrt.runtime._models import TokenAllowanceExceeded, clip_to_allowance

    messages = [{"role": "user", "content": "x" * 3000}]
    with pytest.raises(TokenAllowanceExceeded) as refused:
        clip_to_allowance(1000, messages, None, 600, used=1124)
    need_in = (3000 + 2) // 3 + 8
    assert refused.value.need_tokens == 1124 + need_in + 600 > 2124
    assert refused.value.least_tokens == 1124 + need_in + 1
    assert "after 1124 spent by its earlier calls" in str(refused.value)
    # With what it reported reserved, the same sequence of calls fits.
    allowance = refused.value.need_tokens
    assert clip_to_allowance(allowance - 1124, messages, None, 600, used=1124) == 600
