"""The sandbox survives hostile completions: each fails in bounded time and nothing outside changes."""

from __future__ import annotations

import os
import time

import pytest

from bltbench.suites.sandbox import SandboxLimits, run_python

LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=4, memory_bytes=512 << 20, output_bytes=16 * 1024)
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
