from __future__ import annotations

import random

import pytest

from orchestrator import state as st


def test_reducers_append_merge_and_last_write() -> None:
    s0 = st.initial_state(request="r", team="research")
    s1 = st.apply(s0, [{"messages": [{"role": "a", "content": "1"}], "answer": "x"}])
    s2 = st.apply(s1, [{"messages": [{"role": "b", "content": "2"}], "answer": "y"}])
    assert [m["content"] for m in s2["messages"]] == ["1", "2"]
    assert s2["answer"] == "y"
    assert s0["messages"] == [] and s1["answer"] == "x"  # never mutated


def test_merge_lists_appends_within_keys_and_sorts_keys() -> None:
    merged = st.merge_lists({"b": [1]}, {"a": [2], "b": [3]})
    assert merged == {"a": [2], "b": [1, 3]}
    assert list(merged) == ["a", "b"]


def test_unknown_channel_is_refused() -> None:
    with pytest.raises(KeyError):
        st.apply(st.initial_state(), [{"nope": 1}])


def test_parallel_updates_merge_the_same_in_any_completion_order() -> None:
    base = st.initial_state(request="r")
    updates = [
        {"outputs": {w: [{"v": 1, "text": f"{w} out"}]}, "messages": [{"role": w, "content": w}]}
        for w in ("coder", "reviewer", "tester")
    ]
    expected = st.dumps(st.apply(base, updates))
    for _ in range(10):
        finished = updates[:]
        random.shuffle(finished)
        # The engine applies in assignment order regardless of finishing order.
        ordered = sorted(finished, key=lambda u: updates.index(u))
        assert st.dumps(st.apply(base, ordered)) == expected


def test_checkpoint_round_trip() -> None:
    state = st.apply(st.initial_state(request="hello"), [{"review_failures": {"coder": 2}}])
    assert st.loads(st.dumps(state)) == state
