"""Where a run came from: code revision, the paper's source hash, packages, hardware."""

from __future__ import annotations

import ast
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Callable

import torch

from evals.paths import ROOT

PACKAGES = ("torch", "numpy", "gymnasium", "stable-baselines3", "mujoco", "pydantic", "safetensors")

Reader = Callable[[str], "bytes | None"]


def _read_worktree(relpath: str) -> bytes | None:
    p = ROOT / relpath
    return p.read_bytes() if p.is_file() else None


def _module_to_paths(module: str) -> list[str]:
    base = module.replace(".", "/")
    return [f"{base}.py", f"{base}/__init__.py"]


HASHED_PACKAGES = ("reproductions", "evals.tasks")  # the code that decides a paper's numbers


def _hashed(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in HASHED_PACKAGES)


def source_files(module: str, read: Reader = _read_worktree) -> dict[str, bytes]:
    """The files a paper module runs that decide its numbers: itself and everything it imports
    from `reproductions.*` and from the task package `evals.tasks.*`, transitively (found by
    reading the imports, not by executing them). The rest of the harness is versioned otherwise
    (evaluators by their version, the record by its schema)."""
    found: dict[str, bytes] = {}
    queue = [module]
    seen: set[str] = set()
    while queue:
        mod = queue.pop()
        if mod in seen or not _hashed(mod):
            continue
        seen.add(mod)
        parts = mod.split(".")
        for i in range(2, len(parts)):  # parent packages' __init__ run on import too
            queue.append(".".join(parts[:i]))
        for rel in _module_to_paths(mod):
            data = read(rel)
            if data is None:
                continue
            found[rel] = data
            is_pkg = rel.endswith("__init__.py")
            package = mod if is_pkg else mod.rpartition(".")[0]
            try:
                tree = ast.parse(data)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    queue.extend(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package.split(".")
                        base = base[: len(base) - (node.level - 1)]
                        target = ".".join(base + ([node.module] if node.module else []))
                    else:
                        target = node.module or ""
                    queue.append(target)
                    queue.extend(f"{target}.{a.name}" for a in node.names)  # `from pkg import submodule`
            break
    return found


def hash_files(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for rel, data in sorted(files.items()):
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def source_hash(module: str, read: Reader = _read_worktree) -> str:
    return hash_files(source_files(module, read))


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_revision() -> tuple[str | None, bool]:
    rev = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return rev, bool(status)


def packages() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    return out


def hardware(device: str) -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),  # the vector ISA torch's CPU kernels use
        "device": device,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info
