"""Named randomness: every key a run uses is `named(run_key, "purpose")`.

A key derived by name does not depend on how many other keys were split off
before it, so any part of a run (its data order, its initialisation, its
evaluation latents) can be re-derived later, by `unsupjax evaluate` or a
user, without counting positions in a `jax.random.split`.

Does not offer: a global or default key. Every function that draws takes
its key as an argument.
"""

from __future__ import annotations

import zlib

import jax

MAX_SEED = 2**32 - 1


def check_seed(seed: int, name: str = "seed") -> int:
  """`seed` as an int in [0, 2**32 - 1]; ValueError naming `name` otherwise.

  Larger seeds would be silently truncated to 32 bits by `PRNGKey`, so two
  different seeds could give the same run.
  """
  if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
    raise ValueError(f"{name}: expected an integer in [0, {MAX_SEED}], got {seed!r}")
  return seed


def run_key(seed: int) -> jax.Array:
  """The root key of a run with this seed."""
  return jax.random.PRNGKey(check_seed(seed))


def named(key: jax.Array, name: str) -> jax.Array:
  """`fold_in(key, crc32(name))`: the key for one named purpose.

  The CRC of the name is a fixed 32-bit number, so the same name always
  gives the same key, in any process and any version of Python.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"name: expected a non-empty string, got {name!r}")
  return jax.random.fold_in(key, zlib.crc32(name.encode()))
