"""How the loop compiles: XLA options for CPU, and JAX's persistent cache.

`compile_lowered(lowered)` compiles with `compiler_options()`: on the CPU
backend, LLVM optimisation level 1 instead of XLA's default, which compiles
the library's steps faster and runs them as fast (docs/results/performance.md has the
measurements and `benchmarks/compile.py --compare-xla-defaults` the
command); `UNSUPJAX_CPU_COMPILER_OPTIONS=0` turns it off. A jaxlib that no
longer knows the option falls back to XLA's defaults, says so once and sets
that variable for the rest of the process.

Does not offer: caching of compiled programs in memory (callers keep what
they compile).
"""

from __future__ import annotations

import os
import pathlib
import sys

import jax

CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
_NO_SUCH_OPTION = "No such compile option"


def enable_compilation_cache(path: str | os.PathLike) -> None:
  """Turns on JAX's persistent compilation cache in `path` (every program).

  A second run of the same command then loads its compiled programs instead
  of recompiling them.
  """
  path = pathlib.Path(path).expanduser()
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def compiler_options() -> dict | None:
  """The XLA options `compile_lowered` uses: CPU_COMPILER_OPTIONS on the
  CPU backend (unless UNSUPJAX_CPU_COMPILER_OPTIONS=0), else None."""
  if (jax.default_backend() != "cpu"
      or os.environ.get("UNSUPJAX_CPU_COMPILER_OPTIONS", "1") == "0"):
    return None
  return dict(CPU_COMPILER_OPTIONS)


def compile_lowered(lowered):
  """lowered.compile() with `compiler_options()`."""
  options = compiler_options()
  if options:
    try:
      return lowered.compile(compiler_options=options)
    except jax.errors.JaxRuntimeError as e:
      if _NO_SUCH_OPTION not in str(e):
        raise
      # Said once: the switch below is the documented environment variable,
      # so every later compile of this process uses XLA's defaults.
      os.environ["UNSUPJAX_CPU_COMPILER_OPTIONS"] = "0"
      print(f"unsupjax: this jaxlib does not take {sorted(options)} ({e}); compiling "
            f"with XLA's defaults", file=sys.stderr)
  return lowered.compile()
