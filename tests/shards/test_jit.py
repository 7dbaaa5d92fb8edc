"""The compiled kernels' on-disk cache is safe for processes that compile at the same time.

numba's own ``cache=True`` lets two cold processes give two signatures one data file (see
``shards/jit.py``). Here a real second process must wait for the lock before it may even read the
cache, and every kernel of the code base goes through ``shards.jit.kernel``.
"""

from __future__ import annotations

import ast
import fcntl
import importlib.util
import os
import subprocess
import sys
import time

import numba
import numpy as np
import pytest

from shards.jit import LockedFunctionCache, kernel
from tests.conftest import ROOT

MODULE = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from shards.jit import kernel

@kernel(nogil=True)
def double(a, out):
    for i in range(a.size):
        out[i] = a[i] * 2
"""

CALLER = """
import sys, numpy as np
sys.path.insert(0, {where!r})
import jitprobe
print("calling", flush=True)
a = np.arange(5, dtype=np.int32)
out = np.zeros(5, dtype=np.int32)
jitprobe.double(a, out)
assert (out == a * 2).all()
print("done", flush=True)
"""


def test_a_process_waits_for_the_lock_before_it_reads_or_writes_the_cache(tmp_path, monkeypatch):
    (tmp_path / "jitprobe.py").write_text(MODULE.format(root=str(ROOT)))
    cache = tmp_path / "cache"
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(cache))  # the locator reads it when a cache is made
    spec = importlib.util.spec_from_file_location("jitprobe", tmp_path / "jitprobe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lock_path = LockedFunctionCache(module.double.py_func).lock_path
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CALLER.format(where=str(tmp_path))], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "calling"
        time.sleep(2.0)  # compiling this kernel takes well under a second: it would be done by now
        assert proc.poll() is None, "the kernel was loaded or compiled while another process held the lock"
        assert not list(cache.rglob("*.nbi")), "the cache index was written under another process's lock"
    finally:
        os.close(fd)  # release
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip() == "done"
    assert len(list(cache.rglob("jitprobe.double-*.nbi"))) == 1


def test_a_kernel_without_a_cache_location_still_compiles():
    """A function with no source file (no place for a cache) is compiled per process, not refused."""
    namespace: dict = {}
    exec("def triple(x):\n    return 3 * x\n", namespace)  # a function without a source file
    compiled = kernel(namespace["triple"])
    assert compiled(np.int64(4)) == 12
    with pytest.raises(TypeError, match="always caches"):
        kernel(cache=True)


def test_every_compiled_kernel_uses_the_locked_cache():
    bad = []
    for package in ("ingest", "shards", "training"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "jit.py" and path.parent.name == "shards":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "numba":
                    if node.attr in ("njit", "jit", "guvectorize", "vectorize"):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, f"compile through shards.jit.kernel (a cache safe across processes): {bad}"
