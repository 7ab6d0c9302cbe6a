"""Where a run computes: the one place a configured device (``train.device``, ``le.device``) becomes the
device of this process.

The config accepts only device names learec runs on (cpu, cuda, cuda:N, mps); whether that device is
present is checked here, when ``learec train``, ``evaluate`` or ``env train|label|report`` starts, so a
config written on a GPU machine still loads, shows and edits on one without.
"""

from __future__ import annotations

import torch

from learec import distributed
from learec.errors import UserError


def run_device(name: str, key: str) -> str:
    """The device this process uses for the config key ``key`` (set to ``name``).

    ``cuda`` is this rank's GPU (``cuda:LOCAL_RANK``) under torchrun; anything else is kept. A device this
    machine lacks is refused with a :class:`UserError` naming ``key``.
    """
    kind, _, index = name.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA GPU visible"
            raise UserError(f"{key}={name} asks for a CUDA GPU, and this machine has none ({build})",
                            f"set {key}=cpu, or run on a machine with a GPU and a CUDA build of torch")
        wanted = int(index) if index else (distributed.local_rank() if distributed.is_distributed() else 0)
        if wanted >= count:
            raise UserError(f"{key}={name} asks for GPU {wanted}, and this machine has {count} "
                            f"(cuda:0..cuda:{count - 1})",
                            f"set {key}=cuda or cuda:N with N < {count}; under torchrun, at most {count} processes "
                            "per machine")
        if not index and distributed.is_distributed():
            return f"cuda:{wanted}"
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{key}={name} asks for an Apple GPU (MPS), which this machine lacks",
                        f"set {key}=cpu")
    return name
