"""The local process pool, mapnb's default backend: real parallelism on this machine.

- :mod:`.pool`: the caller's side (``LocalBackend``, ``Pool``): starts workers, hands
  them tasks, reads their reports, kills and replaces them.
- :mod:`._zygote`: the fork server, a clean process the workers are forked from.
- :mod:`.serve`: the loop each worker process runs.
"""

from .pool import LocalBackend, Pool, shared_pool

__all__ = ["LocalBackend", "Pool", "shared_pool"]
