"""Device choice, seeding and mixed precision: the few runtime switches every stage shares."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from common.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``--device auto|cpu|cuda`` into a :class:`torch.device`.

    ``auto`` picks CUDA when available, else CPU.

    Raises:
        UserError: for an unknown name, or ``cuda`` on a machine without a usable GPU.
    """
    if name not in DEVICE_CHOICES:
        raise UserError(f"--device {name!r} is unknown; use one of: {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but PyTorch sees no CUDA GPU here; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """``--deterministic``: PyTorch's deterministic algorithms everywhere.

    ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic
    implementation raises instead of silently varying), cuDNN deterministic with its
    autotuner off, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` as CUDA >= 10.2 requires for
    deterministic cuBLAS. Seeds are set per stage from the config (:func:`seed_everything`,
    :func:`epoch_seed`), so two runs of the same command give the same weights and metrics.
    """
    import os

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for one epoch, derived from the run seed.

    Seeding every epoch from ``(seed, epoch)`` makes an epoch's sampling and augmentation
    independent of whether the run was resumed, so a resumed run reaches the same weights
    as an uninterrupted one.
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


CPU_BF16_ENV = "VIREID_CPU_BF16"
"""Environment variable: "1" lets training steps on a CPU with bf16 in hardware autocast to bf16."""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX, as oneDNN reports it):
    there bf16 convolutions are faster than float32 ones; elsewhere they are emulated and slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the query
        return False


def amp_plan(device: torch.device, enabled: bool, amp_dtype: str = "bf16", *, training: bool = False) -> tuple[torch.dtype | None, bool]:
    """The mixed precision a run gets: (autocast dtype or None for float32, GradScaler on?).

    * ``enabled`` False: (None, False), float32;
    * CUDA, ``amp_dtype`` "bf16": (bfloat16, False) where the GPU supports bf16 (its range is
      fp32's, no loss scaling needed), else (float16, True);
    * CUDA, ``amp_dtype`` "fp16": (float16, True): fp16 autocast with a GradScaler, the
      precision MSCMNet's train.py trains in;
    * CPU, a ``training`` step, ``amp_dtype`` "bf16", on a CPU with bf16 in hardware
      (:func:`cpu_has_native_bf16`) and only where the user opts in with the environment
      variable ``VIREID_CPU_BF16=1`` (an option of ours, not measured for accuracy: the demo's
      figures were made in float32): (bfloat16, False), as on a GPU; every other CPU case
      (None, False): float32. Autocast is slower than float32 convolutions on CPUs without
      bf16 (and with "fp16": no fast fp16 on CPUs); inference on a CPU (translations,
      partners, test features) stays float32, where it is not the bottleneck and partners
      must be the same numbers in the pair cache, the protocol and an exported graph.

    Raises:
        ValueError: ``amp_dtype`` not "bf16" or "fp16".
    """
    if amp_dtype not in ("bf16", "fp16"):
        raise ValueError(f"amp_dtype must be 'bf16' or 'fp16', got {amp_dtype!r}")
    if not enabled:
        return None, False
    if device.type == "cpu":
        opted_in = os.environ.get(CPU_BF16_ENV) == "1"
        return (torch.bfloat16, False) if opted_in and training and amp_dtype == "bf16" and cpu_has_native_bf16() else (None, False)
    if device.type != "cuda":
        return None, False
    if amp_dtype == "bf16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def autocast(device: torch.device, enabled: bool, amp_dtype: str = "bf16", *, training: bool = False) -> contextlib.AbstractContextManager:
    """Autocast to :func:`amp_plan`'s dtype when ``enabled`` (CUDA; training steps on CPUs with
    bf16 in hardware), a no-op context elsewhere."""
    dtype, _ = amp_plan(device, enabled, amp_dtype, training=training)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class DistInfo:
    """This process's place in a distributed run (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK).

    Attributes:
        rank, world_size, local_rank: as torchrun defines them (0, 1, 0 when not distributed).
        enabled: True when WORLD_SIZE > 1 and the process group is initialised.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, enabled: bool = False) -> None:
        self.rank, self.world_size, self.local_rank, self.enabled = rank, world_size, local_rank, enabled

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and logs (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun, and pick this rank's device.

    Backend NCCL on CUDA, gloo on CPU (torchvision reference ``init_distributed_mode``).
    Without torchrun (WORLD_SIZE unset or 1) this is :func:`resolve_device` and a
    single-process :class:`DistInfo`.

    Raises:
        UserError: as :func:`resolve_device`.
    """
    import os

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size <= 1:
        return DistInfo(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, True), device
