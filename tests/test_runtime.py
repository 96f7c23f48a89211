"""common.runtime: the mixed-precision plan of a run (autocast dtype, GradScaler)."""

from __future__ import annotations

import pytest
import torch

from common.runtime import amp_plan, autocast

CUDA = torch.device("cuda")  # a device object only: nothing here runs on a GPU


@pytest.mark.parametrize("bf16_supported", [True, False])
def test_amp_plan_gives_fp16_with_a_scaler_when_asked_or_when_bf16_is_missing(monkeypatch, bf16_supported):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert amp_plan(CUDA, True, "fp16") == (torch.float16, True)  # MSCMNet's train.py: fp16 autocast + GradScaler
    expected_bf16 = (torch.bfloat16, False) if bf16_supported else (torch.float16, True)
    assert amp_plan(CUDA, True, "bf16") == expected_bf16
    assert amp_plan(CUDA, False, "fp16") == (None, False)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_amp_plan_on_a_cpu_trains_in_bf16_only_where_the_cpu_has_it_and_infers_in_float32(monkeypatch, native_bf16):
    import common.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native_bf16)
    cpu = torch.device("cpu")
    monkeypatch.delenv(runtime.CPU_BF16_ENV, raising=False)
    assert amp_plan(cpu, True, "bf16", training=True) == (None, False)  # float32 unless the user opts in
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "1")
    assert amp_plan(cpu, True, "bf16", training=True) == ((torch.bfloat16, False) if native_bf16 else (None, False))
    assert amp_plan(cpu, True, "bf16") == (None, False)  # inference: translations, partners, test features
    assert amp_plan(cpu, True, "fp16", training=True) == (None, False)  # no fast fp16 on a CPU
    assert amp_plan(cpu, False, "bf16", training=True) == (None, False)
    with autocast(cpu, True, "bf16", training=True):
        assert torch.is_autocast_enabled("cpu") == native_bf16
    with autocast(cpu, True, "bf16"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="amp_dtype must be 'bf16' or 'fp16', got 'fp32'"):
        amp_plan(cpu, True, "fp32")


def test_cpu_has_native_bf16_answers_a_bool():
    from common.runtime import cpu_has_native_bf16

    assert isinstance(cpu_has_native_bf16(), bool)
