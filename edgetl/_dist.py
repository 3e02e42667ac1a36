"""Where a fine-tune runs: the device, DDP under torchrun, and the RNG state a resume restores.

    device = resolve_device("auto")          # cuda:LOCAL_RANK when there is a GPU, else cpu
    dist = init_dist(device)                 # rank/world from torchrun's env; world 1 otherwise
    dist.all_sum([loss_sum, correct, n])     # exact metrics across ranks
    state = rng_state(); ...; set_rng_state(state)
"""
from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import torch

from .errors import ConfigError


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def init_dist(device: torch.device) -> Dist:
    """DDP from torchrun's environment (NCCL on GPUs, gloo on the CPU), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(choice: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' -> a device; asking for CUDA where there is none is one clear error."""
    choice = getattr(choice, "value", choice)
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available here "
                          f"(torch {torch.__version__}, no usable GPU): use --device cpu, or --device auto")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    py, np_state = random.getstate(), np.random.get_state()
    return {"python": list(py[1]), "python_pos": py[2], "numpy": np_state[1].tolist(), "numpy_pos": int(np_state[2]),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(s: dict) -> None:
    random.setstate((3, tuple(s["python"]), s["python_pos"]))
    np.random.set_state(("MT19937", np.array(s["numpy"], dtype=np.uint32), s["numpy_pos"], 0, 0.0))
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
