"""Task orders: which permutation of a stream's tasks is trained (``data.order``).

``origin`` is the order the tasks are listed in (``data.tasks``, a suite's ``tasks``); ``reverse``
and ``alphabet`` (case-insensitive, ties by the exact name) are derived from it; a suite may name
more orders of its own (its ``orders:`` mapping); an explicit list must be a permutation of the
tasks. ``resolve_order`` is pure: the order sweep (``mmcit sweep --orders``) and the stream both use
it, so a name always means the same task list.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from mmcit.errors import ConfigError

#: Order names every stream understands.
BUILTIN_ORDERS: tuple[str, ...] = ("origin", "reverse", "alphabet")


def resolve_order(order: str | Sequence[str], tasks: Sequence[str],
                  named: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The task list of ``order`` over ``tasks`` (in their origin order).

    ``order`` is one of ``BUILTIN_ORDERS``, a name in ``named`` (a suite's own orders, each over a
    subset or all of its tasks: only the tasks in ``tasks`` are kept, in that order), or an explicit
    list that must hold every task of ``tasks`` exactly once. Raises ``ConfigError`` otherwise.
    """
    tasks = list(tasks)
    if isinstance(order, str):
        if order == "origin":
            return tasks
        if order == "reverse":
            return tasks[::-1]
        if order == "alphabet":
            return sorted(tasks, key=lambda t: (t.lower(), t))
        if named and order in named:
            listed = list(named[order])
            missing = [t for t in tasks if t not in listed]
            if missing:
                raise ConfigError(f"data.order: the order {order!r} does not place {', '.join(missing)}")
            return [t for t in listed if t in tasks]
        known = [*BUILTIN_ORDERS, *(named or {})]
        raise ConfigError(f"data.order: unknown order {order!r}; known: {', '.join(known)}, or a list of the tasks")
    listed = [str(t) for t in order]
    if sorted(listed) != sorted(tasks) or len(set(listed)) != len(listed):
        raise ConfigError(f"data.order: an explicit order must list each task once: got {listed}, "
                          f"tasks are {tasks}")
    return listed


def order_label(order: str | Sequence[str]) -> str:
    """A short name for an order (what results.json and sweep tables show): the name itself, or
    the explicit list joined by ``>``."""
    return order if isinstance(order, str) else ">".join(str(t) for t in order)
