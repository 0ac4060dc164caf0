"""kernels.shared_setting: the first user in changes the setting, the last one out
restores it, whatever the nesting, the threads and the exceptions in between."""
from __future__ import annotations

import threading

import pytest

from kernels.shared_setting import SharedSetting


def _setting():
    state = {"value": 4, "changes": 0, "restores": 0}

    def change():
        state["changes"] += 1
        saved, state["value"] = state["value"], 1
        return saved

    def restore(saved):
        state["restores"] += 1
        state["value"] = saved
    return SharedSetting(change, restore), state


def test_nested_scopes_change_and_restore_once():
    s, state = _setting()
    with s.scope():
        assert state["value"] == 1
        with s.scope():
            assert state["value"] == 1
        assert state["value"] == 1
    assert state == {"value": 4, "changes": 1, "restores": 1}


def test_an_exception_inside_still_restores():
    s, state = _setting()
    with pytest.raises(KeyError):
        with s.scope():
            raise KeyError("x")
    assert state["value"] == 4 and state["restores"] == 1
    with s.scope():  # and the next user changes it again
        assert state["value"] == 1
    assert state["value"] == 4


def test_overlapping_threads_share_one_change():
    s, state = _setting()
    a_in, b_in, a_out = (threading.Event() for _ in range(3))
    seen = []

    def a():
        with s.scope():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with s.scope():
            b_in.set()
            a_out.wait(5)
            seen.append(state["value"])  # a has left; b is still inside
    ts = [threading.Thread(target=f) for f in (a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert seen == [1]
    assert state == {"value": 4, "changes": 1, "restores": 1}
