"""Data-parallel LLM runs: one run over N processes with ``torch.nn.parallel.DistributedDataParallel``.

Why plain DDP and not ``accelerate``: the loop (:mod:`clsuite.llm.loop`) must keep the
continual-learning state — replay decisions, MSSR memory, triggers — identical on every
rank, which needs control over *which rows* a rank forwards and an explicit all-gather of
the per-sample losses; accelerate's ``prepare`` would shard the data loader and wrap the
optimizer, neither of which the loop uses, and adds a launcher/config layer. DDP gives
exactly the one thing needed (gradient all-reduce in backward) in a few lines.

Semantics (see docs/llm.md, "Multi-GPU LLM runs"): every rank builds the same minibatch
(B rows: current + replayed); rank r forwards/backwards only the contiguous rows
:func:`shard_bounds` (B, r, world); the per-sample losses/accuracies are gathered back into
(B,) vectors in the original order (:func:`gather_rows`), so every plugin sees the same
values on every rank; the local rows carry ``world ×`` their gradient, so after DDP's
gradient *averaging* the gradient equals that of the single-process mean loss.

Launch: :func:`launch` spawns N workers (``torch.multiprocessing.spawn``) on loopback
(``MASTER_ADDR=127.0.0.1``, a free port) unless ``WORLD_SIZE`` is already set (torchrun),
in which case the process just joins. Backend ``nccl`` on CUDA (device ``cuda:<local_rank>``),
``gloo`` on CPU.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from clsuite.core.errors import ClsuiteError, RunFailed


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a data-parallel run (``world == 1``: no process group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous rows among n; sizes differ by at most 1 (first ranks larger)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_rows(local: torch.Tensor, n: int, info: DistInfo) -> torch.Tensor:
    """All ranks' rows (:func:`shard_bounds` of n) concatenated in rank order: (n, ...) from
    this rank's (stop − start, ...). Detached (all_gather carries no gradient)."""
    if info.world == 1:
        return local.detach()
    width = -(-n // info.world)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: len(local)] = local.detach()
    parts = [torch.empty_like(padded) for _ in range(info.world)]
    dist.all_gather(parts, padded)
    sizes = [b - a for a, b in (shard_bounds(n, r, info.world) for r in range(info.world))]
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def with_local_grad(full: torch.Tensor, local: torch.Tensor, start: int, scale: float) -> torch.Tensor:
    """``full`` (n,) detached values whose rows [start, start+len(local)) carry ``scale ×`` the
    gradient of ``local`` (values unchanged: local + (scale − 1)(local − local.detach()))."""
    local_g = local.detach() + scale * (local - local.detach())
    return torch.cat([full[:start], local_g, full[start + len(local):]])


def agree(value: int, info: DistInfo, device: torch.device) -> bool:
    """Whether every rank passed the same integer ``value`` (collective; True in one process)."""
    if info.world == 1:
        return True
    t = torch.tensor([value, -value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0]) == value == -int(t[1])


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def env_info() -> DistInfo | None:
    """The torchrun-style environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) if set, else None."""
    if "WORLD_SIZE" not in os.environ:
        return None
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"]),
                    int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0))))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_device(device: torch.device, info: DistInfo) -> torch.device:
    """``cuda:<local_rank>`` for a CUDA run (set as the current device), else ``device``."""
    if device.type == "cuda" and info.world > 1:
        torch.cuda.set_device(info.local_rank)
        return torch.device(f"cuda:{info.local_rank}")
    return device


def init_group(info: DistInfo, device: torch.device) -> None:
    """Join the process group of ``info`` (env:// rendezvous; MASTER_ADDR/PORT must be set)."""
    if info.world > 1 and not dist.is_initialized():
        kw = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend_for(device), rank=info.rank, world_size=info.world, **kw)


def _spawned(rank: int, world: int, fn: Callable[..., Any], args: tuple, kwargs: dict, errors: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    try:
        fn(*args, **kwargs)
    except BaseException as exc:  # hand the exception's type and fields to the launcher (spawn keeps only its text)
        try:
            (Path(errors) / f"rank{rank}.json").write_text(json.dumps(_exception_fields(exc), default=str))
        except Exception:
            pass
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _exception_fields(exc: BaseException) -> dict[str, Any]:
    """The JSON-able fields of a worker's exception: type name, message, RunFailed's status."""
    return {"type": type(exc).__name__, "message": str(exc), "status": getattr(exc, "status", None)}


def _clsuite_errors() -> dict[str, type[ClsuiteError]]:
    """Every clsuite error class by name (the types a worker's exception is rebuilt as)."""
    found, todo = {}, [ClsuiteError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def _rebuild_exception(fields: dict[str, Any]) -> ClsuiteError | None:
    """A worker's clsuite error from :func:`_exception_fields`; None for any other type (the
    launcher then raises torch's ProcessRaisedException with the worker's traceback text). Only
    the allowlisted clsuite error classes are constructed, with a message and a status mapping."""
    cls = _clsuite_errors().get(str(fields.get("type")))
    if cls is None:
        return None
    message, status = str(fields.get("message", "")), fields.get("status")
    if issubclass(cls, RunFailed):
        return cls(message, **(status if isinstance(status, dict) else {}))
    return cls(message)


def launch(world: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` in ``world`` spawned processes on loopback (torchrun env vars
    set for each: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free MASTER_PORT);
    ``fn`` must be a picklable top-level function that calls :func:`init_group`. The first
    failing worker's exception is re-raised here with its own type when it is a clsuite error
    (e.g. ``ParamsError``, ``TrainingDiverged`` with its status); else
    ``torch.multiprocessing.ProcessRaisedException``."""
    import tempfile

    import torch.multiprocessing as mp

    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    try:
        # the workers' exceptions go, as JSON (type name, message, status; nothing that can execute code when
        # read), to a private folder of this process (mkdtemp: mode 0700, removed after), never to a run folder
        with tempfile.TemporaryDirectory(prefix="clsuite-ddp-") as errors:
            try:
                mp.spawn(_spawned, args=(world, fn, args, kwargs, errors), nprocs=world, join=True)
            except mp.ProcessRaisedException as failed:
                path = Path(errors) / f"rank{failed.error_index}.json"
                try:
                    original = _rebuild_exception(json.loads(path.read_text()))
                except Exception:
                    raise failed from None
                if original is None:
                    raise failed from None
                raise original from failed
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
