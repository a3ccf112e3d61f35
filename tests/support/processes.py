"""Processes the tests run: `vqtool` as forks of one warm process (`Forks`), the
Megatron-Core reader in its own interpreter, a free port, and `vqtool` with torch blocked."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time

_MEGATRON_CHILD = r"""
import contextlib, io, json, os, sys, traceback, warnings
warnings.simplefilter("ignore")
import megatron.core.datasets.indexed_dataset  # the slow import, once for the session
channel = sys.stdout
for line in sys.stdin:
    request = json.loads(line)
    sys.argv = ["-", *request["args"]]
    os.chdir(request["cwd"])
    out, error = io.StringIO(), None
    try:
        with contextlib.redirect_stdout(out):
            exec(request["code"], {"__name__": "__main__"})
    except BaseException:
        error = traceback.format_exc()
    channel.write("\0" + json.dumps({"out": out.getvalue(), "error": error}) + "\n")
    channel.flush()
"""


_megatron = []


def in_megatron(code: str, *args) -> str:
    """Run `code` (with `sys.argv[1:] == args`, in the caller's folder) where Megatron-Core
    is imported, and return what it printed. One child process serves the whole session:
    importing megatron.core takes ~8 s, and it registers numpy and argparse classes as
    torch.load safe globals, so it never runs in the test process."""
    import atexit

    if not _megatron or _megatron[0].poll() is not None:
        child = subprocess.Popen([sys.executable, "-c", _MEGATRON_CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
        atexit.register(lambda: (child.stdin.close(), child.wait(timeout=30)))
        _megatron[:] = [child]
    child = _megatron[0]
    request = {"code": code, "args": [str(a) for a in args], "cwd": os.getcwd()}
    child.stdin.write(json.dumps(request) + "\n")
    child.stdin.flush()
    while not (line := child.stdout.readline()).startswith("\0"):
        if not line:
            raise RuntimeError(f"the Megatron-Core child exited with {child.wait()}")
    reply = json.loads(line[1:])
    if reply["error"]:
        raise AssertionError(f"in the Megatron-Core child:\n{reply['error']}")
    return reply["out"]


_FORK_SERVER = r"""
import json, os, sys
import vqtool.cli.main as cli
import vqtool.tokens.encode  # noqa: F401 - imported once, before any fork
import vqtool.export.job, vqtool.training.loop  # noqa: F401
import torch._dynamo  # noqa: F401 - torch.optim imports it when an optimizer is made (~2 s)
for line in sys.stdin:
    argv, err, out, prelude, cwd, env = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["vqtool", *argv]
        code = 1
        try:
            exec(prelude, {})
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class Forks:
    """Runs `vqtool ARGS` as forks of one warm process, one run at a time, each in the
    caller's folder and environment at the moment it starts; reports pids and exit codes.
    A fresh interpreter importing vqtool and torch costs seconds; a fork runs the same
    `main()`, signal handlers and decode workers as `python -m vqtool` without it.
    `prelude`: Python run in the fork first (to patch a library, say). `Forks.shared()`:
    the session's one server."""

    _shared: Forks | None = None

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _FORK_SERVER],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        self.pending = b""
        self.running: int | None = None  # the pid of a run not yet reported

    @classmethod
    def shared(cls) -> Forks:
        """The session's server, started on first use (and afresh when a failed test left
        a run going)."""
        old = cls._shared
        if old is None or old.running is not None or old.proc.poll() is not None:
            if old is not None:
                old.kill()
            cls._shared = cls()
        return cls._shared

    def _line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, "the fork server died"
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def start(self, args: list, stderr, stdout=os.devnull, prelude: str = "") -> int:
        assert self.running is None, "one run at a time"
        request = [[str(a) for a in args], str(stderr), str(stdout), prelude, os.getcwd(),
                   dict(os.environ)]  # fmt: skip
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        self.running = int(self._line(120))
        return self.running

    def exit_code(self, timeout: float = 0) -> int | None:
        """The run's exit status, or None while it is still running after `timeout`."""
        line = self._line(timeout)
        if line is None:
            return None
        self.running = None
        return int(line)

    def kill(self):
        """Stop the server and any run of it still going."""
        for pid in (self.running, self.proc.pid):
            if pid is not None:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        self.proc.wait(60)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on, for gloo rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: a `vqtool` process in which torch cannot be imported at all
_WITHOUT_TORCH = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ImportError('torch imported: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "from vqtool.cli.main import main\n"
    "sys.argv = ['vqtool', *sys.argv[1:]]\n"
    "main()\n"
)


def run_without_torch(*args: str) -> subprocess.CompletedProcess:
    """`vqtool ARGS...` in a process that fails on any torch import."""
    return subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
