"""Run state as typed channels, each updated only through its reducer.

Reducers are plain `(old, new) -> merged` functions. Parallel worker updates are applied in
the order of their assignment index, never in completion order, so the merged state is the
same whatever order the workers finish in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Reducer = Callable[[Any, Any], Any]


def append(old: list[Any], new: list[Any]) -> list[Any]:
    """Logs and transcripts only grow."""
    return [*old, *new]


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Dicts merge key by key; keys are kept sorted so serialisation is deterministic."""
    merged = {**old, **new}
    return {key: merged[key] for key in sorted(merged)}


def merge_lists(old: dict[str, list[Any]], new: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Per-key histories (for example each worker's outputs) append within their key."""
    merged = dict(old)
    for key, values in new.items():
        merged[key] = [*merged.get(key, []), *values]
    return {key: merged[key] for key in sorted(merged)}


def add(old: int | float, new: int | float) -> int | float:
    return old + new


def last(old: Any, new: Any) -> Any:
    """Scalars: last write wins."""
    return new


@dataclass(frozen=True)
class Channel:
    reducer: Reducer
    default: Callable[[], Any]


CHANNELS: Mapping[str, Channel] = {
    "request": Channel(last, str),
    "team": Channel(last, lambda: None),
    "next": Channel(last, lambda: "route"),
    "messages": Channel(append, list),
    "assignments": Channel(last, list),
    "assigned": Channel(append, list),
    "outputs": Channel(merge_lists, dict),
    "tool_results": Channel(append, list),
    "turns": Channel(last, dict),  # worker turns held for a human, resumed by the next step
    "previous": Channel(last, dict),  # the run this one follows up in the same thread
    "review_failures": Channel(merge, dict),
    "personas": Channel(merge, dict),
    "summary": Channel(last, str),
    "summarised_upto": Channel(last, lambda: 0),
    "answer": Channel(last, lambda: None),
    "human_input": Channel(append, list),
    "human_seen": Channel(last, lambda: 0),
    "error": Channel(last, lambda: None),
}

State = dict[str, Any]


def initial_state(**values: Any) -> State:
    state = {name: channel.default() for name, channel in CHANNELS.items()}
    return apply(state, [values])


def apply(state: State, updates: Iterable[Mapping[str, Any]]) -> State:
    """Fold updates into a new state through each channel's reducer; never mutates `state`."""
    result = dict(state)
    for update in updates:
        for name, value in update.items():
            channel = CHANNELS.get(name)
            if channel is None:
                raise KeyError(f"unknown state channel {name!r}")
            current = result.get(name, channel.default())
            result[name] = channel.reducer(current, value)
    return result


def diff(old: State, new: State) -> list[dict[str, Any]] | None:
    """Updates that take `old` to `new` through the reducers; None if they cannot (a list
    that did not only grow). Used to turn stored full states into deltas."""
    update: dict[str, Any] = {}
    for name, channel in CHANNELS.items():
        before, after = old.get(name, channel.default()), new.get(name, channel.default())
        if before == after:
            continue
        if channel.reducer is append:
            if after[: len(before)] != before:
                return None
            update[name] = after[len(before) :]
        elif channel.reducer is merge:
            if any(key not in after for key in before):
                return None
            update[name] = {k: v for k, v in after.items() if before.get(k) != v}
        elif channel.reducer is merge_lists:
            grown: dict[str, list[Any]] = {}
            for key, values in after.items():
                previous = before.get(key, [])
                if values[: len(previous)] != previous:
                    return None
                if len(values) > len(previous):
                    grown[key] = values[len(previous) :]
            if any(key not in after for key in before):
                return None
            update[name] = grown
        elif channel.reducer is add:
            update[name] = after - before
        else:
            update[name] = after
    return [update] if update else []


def dumps(state: State) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


def loads(text: str) -> State:
    loaded = json.loads(text)
    return {name: loaded.get(name, channel.default()) for name, channel in CHANNELS.items()}
