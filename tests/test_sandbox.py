"""The sandbox survives hostile completions: each fails in bounded time and nothing outside changes."""

from __future__ import annotations

import os
import time

import pytest

from bltbench.suites.sandbox import SandboxLimits, run_python

LIMITS = SandboxLimits(cpu_seconds=1, wall_seconds=2.5, memory_bytes=512 << 20, output_bytes=16 * 1024)
BOUND_S = LIMITS.wall_seconds + 3  # wall limit plus teardown


@pytest.fixture()
def canary(tmp_path):
    path = tmp_path / "canary.txt"
    path.write_text("alive")
    return path


def _hostile(canary):
    return {
        "infinite loop": "while True:\n    pass",
        "sleeps forever": "import time\ntime.sleep(1000)",
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "fork bomb via posix": "import posix\nwhile True:\n    posix.fork()",
        "memory bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))",
        "deletes a file outside": f"import os\nos.remove({str(canary)!r})",
        "overwrites a file outside": f"open({str(canary)!r}, 'w').write('pwned')",
        "opens a socket": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
        "opens a raw socket": "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('1.1.1.1', 80))",
        "kills its parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "kills its parent via posix": "import posix\nposix.kill(posix.getppid(), 9)",
        "floods stdout": "while True:\n    print('x' * 1000)",
    }


@pytest.mark.parametrize("name", sorted(_hostile("x")))
def test_hostile_completion_fails_safely(canary, name):
    if name == "overwrites a file outside" and os.geteuid() != 0:
        pytest.skip("without root the sandbox cannot drop to another user; the file guard still blocks removal")
    start = time.monotonic()
    result = run_python(_hostile(canary)[name], LIMITS)
    elapsed = time.monotonic() - start
    assert not result.passed and result.status in ("failed", "timeout")
    assert elapsed < BOUND_S
    assert canary.read_text() == "alive"
    assert len(result.output.encode()) <= LIMITS.output_bytes
    assert os.getppid() > 1  # we are still here, and so is our parent


def test_honest_programs_pass_and_failures_fail():
    assert run_python("assert sum(range(10)) == 45\nprint('ok')", LIMITS).passed
    result = run_python("assert 1 == 2", LIMITS)
    assert result.status == "failed" and "AssertionError" in result.output


FAILING_CHECK = "def check():\n    assert 1 + 1 == 3, 'wrong'\n"
CHEATS = {  # each would pass a harness that trusts the exit status
    "sys.exit(0) before the checks": "import sys\nsys.exit(0)\n" + FAILING_CHECK + "check()",
    "exit(0), as MBPP completions write": "exit(0)\n" + FAILING_CHECK + "check()",
    "raise SystemExit": "raise SystemExit(0)\n" + FAILING_CHECK + "check()",
    "os._exit(0) before the checks": "import os\nos._exit(0)\n" + FAILING_CHECK + "check()",
    "posix._exit via a fresh import": "__import__('posix')._exit(0)\n" + FAILING_CHECK + "check()",
    "atexit hook after a failing check": "import atexit, os\natexit.register(lambda: os._exit(0))\n" + FAILING_CHECK + "check()",
    "replaced excepthook": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n" + FAILING_CHECK + "check()",
    "SIGTERM to itself ignored, then exit 0": "import os, signal\nsignal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
                                              "os.kill(os.getpid(), signal.SIGTERM)\n" + FAILING_CHECK + "check()",
    "a thread exits the process": "import threading, os, time\nthreading.Thread(target=lambda: os._exit(0)).start()\n"
                                  "time.sleep(0.5)\n" + FAILING_CHECK + "check()",
    "writes guesses on every descriptor": "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'0' * 32)\n"
                                          "    except OSError:\n        pass\n" + FAILING_CHECK + "check()",
    "guard undone by deleting the module": "import sys\ndel sys.modules['os']\nimport os\nos._exit(0)\n" + FAILING_CHECK + "check()",
    "the harness module's names replayed": "import __main__, os\n"
        "secrets = [v for v in vars(__main__).values() if isinstance(v, bytes) and len(v) == 32]\n"
        "for fd in range(3, 64):\n    for v in secrets:\n        try:\n"
        "            os.write(fd, v)\n        except OSError:\n            pass\n"
        "os._exit(0)\n" + FAILING_CHECK + "check()",
}


@pytest.fixture(params=["namespaces", "process group"])
def mode(request, monkeypatch):
    """Both containments: namespaces (as root, where the kernel allows) and the process group + sweep
    used elsewhere."""
    from bltbench.suites import sandbox

    if request.param == "namespaces" and not sandbox.namespaces_available():
        pytest.skip("no namespaces here")
    if request.param == "process group":
        monkeypatch.setattr(sandbox, "namespaces_available", lambda: False)
    return request.param


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_a_program_cannot_pass_without_running_its_checks(name, mode):
    result = run_python(CHEATS[name], LIMITS)
    assert not result.passed, result


def _sandbox_processes() -> list[int]:
    """Processes of the sandbox user still running (as root the sample runs as nobody)."""
    from pathlib import Path

    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == 65534:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in ("Z", "X"):  # a zombie is dead, only not yet reaped by its new parent
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and a sandbox user need root")

ESCAPES = {
    "fork + setsid daemon": "import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n    time.sleep({delay})\n"
                            "    open({leak!r}, 'w').write('escaped')\n",
    "spawn through a reloaded os": "import importlib, os\nos = importlib.reload(os)\n"
                                   "os.posix_spawn('/bin/sh', ['sh', '-c', 'sleep {delay}; echo escaped > {leak}'], {{}})\n",
    "ctypes fork after undoing the guard": "import sys\ndel sys.modules['ctypes']\nimport ctypes, time\n"
                                           "if ctypes.CDLL(None).fork() == 0:\n    time.sleep({delay})\n"
                                           "    open({leak!r}, 'w').write('escaped')\n",
    "multiprocessing after undoing the guard": "import sys\ndel sys.modules['multiprocessing']\nimport multiprocessing, time\n"
                                               "def later():\n    time.sleep({delay})\n    open({leak!r}, 'w').write('escaped')\n"
                                               "p = multiprocessing.Process(target=later, daemon=False)\np.start()\n",
}


@root_only
def test_no_process_of_a_sample_outlives_it(mode):
    """Processes a sample leaves behind (detached, reparented) die with it: nothing writes later, and
    the process table holds nothing of the sandbox user."""
    leaks = {name: f"/tmp/bltbench-escape-{os.getpid()}-{i}.txt" for i, name in enumerate(sorted(ESCAPES))}
    for name, leak in leaks.items():
        run_python(ESCAPES[name].format(delay=0.6, leak=leak), LIMITS)
    time.sleep(1.2)  # past every escape's delay
    assert [name for name, leak in leaks.items() if os.path.exists(leak)] == []
    assert _sandbox_processes() == []


@root_only
def test_files_a_sample_writes_outside_its_folder_vanish_with_it():
    leaks = [f"/tmp/bltbench-leak-{os.getpid()}-{i}.bin" for i in range(20)] + [f"/var/tmp/bltbench-leak-{os.getpid()}"]
    program = "import os\n" + "".join(f"open({p!r}, 'wb').write(b'x' * 8000)\n" for p in leaks) + \
              "print(sorted(os.listdir('/tmp')))\n"
    result = run_python(program, LIMITS)
    assert result.passed, result.output  # the writes themselves succeed, in the sample's own /tmp
    assert not any(os.path.exists(p) for p in leaks)


@root_only
def test_a_sample_cannot_fill_the_disk():
    big = SandboxLimits(cpu_seconds=4, wall_seconds=8, output_bytes=1 << 30, tmp_bytes=4 << 20)
    program = "i = 0\nwhile True:\n    open(f'/tmp/fill-{i}', 'wb').write(b'x' * (1 << 20))\n    i += 1\n"
    result = run_python(program, big)
    assert result.status == "failed" and "No space left" in result.output


def test_honest_programs_using_the_standard_library_pass(mode):
    program = ("import collections, dataclasses, tempfile, typing, json\n"
               "Point = collections.namedtuple('Point', 'x y')\n"
               "@dataclasses.dataclass\nclass Box:\n    size: int\n"
               "T = typing.TypeVar('T')\n"
               "open('scratch.txt', 'w').write('ok')\n"
               "def check(f):\n    assert f(Point(1, 2)) == 3 and Box(2).size == 2\n"
               "check(lambda p: p.x + p.y)\n")
    result = run_python(program, LIMITS)
    assert result.passed, result.output


@root_only
def test_honest_programs_may_use_temporary_files_in_their_namespace():
    program = ("import tempfile, json, os\n"
               "with tempfile.TemporaryDirectory() as d:\n    open(d + '/f.json', 'w').write(json.dumps([1]))\n"
               "os.remove(tempfile.mkstemp()[1])\n")
    result = run_python(program, LIMITS)
    assert result.passed, result.output
