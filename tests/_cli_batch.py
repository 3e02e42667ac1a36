"""Run many real `edgetl` command lines, each in its own forked child of one interpreter.

    python tests/_cli_batch.py JOBS TIMEOUT_S WORKDIR < cases.json > results.json

Every child is a separate process, as a user's command is: its own cwd, environment, argv, exit code,
stdout and stderr (file descriptors 1 and 2, redirected to files), through the console entry point
``edgetl.cli.main``. What is shared is only the start: torch, onnx and onnxruntime are imported once
here before forking, instead of once per command (70 commands of the bad-input suite spent most of
their 110 s importing torch). Nothing that reads the environment at import time is imported here
(huggingface_hub's cache path is: timm comes in only in the children that need it).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time


def _child(case: dict, out: str, err: str) -> None:
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        if case.get("cwd"):
            os.chdir(case["cwd"])
        os.environ.update(case.get("env") or {})
        sys.argv = ["edgetl", *case["argv"]]
        from edgetl.cli import main

        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what a user would see: the traceback, exit 1
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    jobs, timeout, work = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    cases = json.load(sys.stdin)
    import onnx  # noqa: F401  (the imports every command pays for)
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    import edgetl.cli  # noqa: F401

    sys.stdout.flush()
    sys.stderr.flush()
    queue, running, results = list(cases), {}, {}
    while queue or running:
        while queue and len(running) < jobs:
            c = queue.pop(0)
            out, err = os.path.join(work, f"{c['id']}.out"), os.path.join(work, f"{c['id']}.err")
            pid = os.fork()
            if pid == 0:
                _child(c, out, err)
            running[pid] = (c, out, err, time.monotonic())
        time.sleep(0.02)
        for pid, (c, out, err, t0) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                if time.monotonic() - t0 > timeout:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    code = 124
                else:
                    continue
            else:
                code = os.waitstatus_to_exitcode(status)
            del running[pid]
            with open(out) as fo, open(err) as fe:
                results[c["id"]] = {"returncode": code, "stdout": fo.read(), "stderr": fe.read()}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
