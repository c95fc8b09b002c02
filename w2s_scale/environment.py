"""The machine's folders and devices a run will need, checked before any rank starts: caches it
will write (the model hub's, DeepSpeed's JIT-built ops) and the GPUs CUDA_VISIBLE_DEVICES names.
Each problem is one line naming the variable or folder and the fix (results_dir: preflight).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from w2s_scale.errors import UserError


class EnvironmentProblem(UserError):
    """A folder the run must write is not writable, or a device it names does not exist."""


def _unwritable(folder: Path) -> Optional[Path]:
    """The nearest existing folder at or above `folder` if the run cannot create or write there."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            ok = parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)
            return None if ok else parent
    return None


def hub_cache() -> tuple[str, Path]:
    """The variable that places the hub's cache, and the folder."""
    for var in ("HF_HUB_CACHE", "HF_HOME"):
        if os.environ.get(var):
            return var, Path(os.environ[var]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return "HF_HOME", base / "huggingface"


def extensions_dir() -> tuple[str, Path]:
    """Where torch (and DeepSpeed through it) JIT-builds C++ ops: DeepSpeed's CPU collectives op
    on CPU machines, its Adam ops on GPUs (torch.utils.cpp_extension's default)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return "TORCH_EXTENSIONS_DIR", Path(os.environ["TORCH_EXTENSIONS_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return "TORCH_EXTENSIONS_DIR", base / "torch_extensions"


def check_folders(hub_offline: bool) -> None:
    folders = [extensions_dir()]
    if not hub_offline:  # offline, a read-only shared cache is a normal setup
        folders.insert(0, hub_cache())
    for var, folder in folders:
        bad = _unwritable(folder)
        if bad is not None:
            what = "is not a folder" if not bad.is_dir() else "is not writable"
            also = " (or HF_HUB_OFFLINE=1 to only read the cache)" if folder == hub_cache()[1] else ""
            raise EnvironmentProblem(f"{var}: {bad} {what}, and the run writes {folder}; set {var} "
                                     f"to a writable folder{also}")


_DEVICE = re.compile(r"^(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)$")


def check_devices(nproc: int, cuda_build: bool, driver: bool, device_count: int) -> None:
    """CUDA_VISIBLE_DEVICES: each entry a device index or UUID; on a machine that has CUDA (a
    CUDA build of torch and an NVIDIA driver), at least one device per rank of this machine
    (CUDA ignores the entries from the first one it cannot find, so a wrong index hides the
    devices after it, and with none left the run would fall back to the CPU). On a machine
    without CUDA the ranks run on CPU and the variable is not used: only its spelling is checked."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return
    entries = [e.strip() for e in value.split(",") if e.strip()]
    for entry in entries:
        if not _DEVICE.match(entry):
            raise EnvironmentProblem(f"CUDA_VISIBLE_DEVICES: {entry!r} in {value!r} is not a device "
                                     f"index or GPU UUID; list devices as 0,1,... (nvidia-smi -L)")
    if not (cuda_build and driver) or not entries:
        return
    if device_count < nproc:
        raise EnvironmentProblem(f"CUDA_VISIBLE_DEVICES: {value!r} gives {device_count} usable "
                                 f"GPU(s) here, for {nproc} rank(s) (a listed device that does not "
                                 f"exist hides the ones after it); list existing devices "
                                 f"(nvidia-smi -L) or lower --nproc")


def check_environment(nproc: int) -> None:
    """Before any rank starts (and on each rank a launcher started by itself); `nproc`: the
    ranks on this machine."""
    import torch

    from_env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    check_folders(hub_offline=from_env)
    cuda_build = torch.version.cuda is not None
    driver = Path("/proc/driver/nvidia/version").exists()
    count = torch.cuda.device_count() if cuda_build and driver else 0
    check_devices(nproc, cuda_build, driver, count)
