"""Peak memory of a model as a fresh process sees it (the device's own number, not this process's)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def peak_rss_mb(model: Path, providers, threads: int, batch: np.ndarray) -> float | None:
    """Peak RSS of a fresh process that loads ``model`` and runs ``batch`` a few times."""
    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as f:
        np.save(f, batch)
    code = ("import json,resource,sys,numpy as np\n"
            "from edgetl.runtime.session import ort_session\n"  # the device's own session options
            f"s=ort_session({str(model)!r},{int(threads)},{list(providers)!r})\n"
            f"x=np.load({f.name!r}); n=s.get_inputs()[0].name\n"
            "[s.run(None,{n:x}) for _ in range(5)]\n"
            # VmHWM belongs to this process's own address space (new at exec); ru_maxrss is not: Linux
            # carries it over from a fat parent through fork+exec (a 4 GB trainer reported 4 GB here)
            "hwm=[int(l.split()[1])/1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')] "
            "if sys.platform.startswith('linux') else []\n"
            "r=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(hwm[0] if hwm else r/(1048576 if sys.platform=='darwin' else 1024))")
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        return float(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None
    finally:
        os.unlink(f.name)
