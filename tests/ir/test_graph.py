"""Graph IR: construction, printing, verifier, interpreter, JSON round trip."""
import json

import numpy as np
import pytest

from ir import dtypes as dt
from ir import serialize
from ir.graph import Graph
from ir.interpreter import eval_op, interpret
from ir.verify import GraphError, verify


def _graph():
    g = Graph("f")
    x = g.add_input((4, 8), dt.float32, "x")
    w = g.add_input((8,), dt.float32, "w")
    c = g.add_const(np.arange(8, dtype=np.float32))
    a = g.add_node("mul", [x, w])
    b = g.add_node("add", [a, 1.5])
    d = g.add_node("add", [b, c])
    e = g.add_node("sum", [d], {"dims": (1,), "keepdim": True})
    f = g.add_node("cast", [e], {"dtype": dt.float64})
    t = g.add_node("permute", [d], {"dims": (1, 0)})
    s = g.add_node("getitem", [t], {"index": (("s", 1, None, 2), ("i", 0))})
    g.set_outputs([f, s])
    return g


def test_build_print_verify():
    g = _graph()
    verify(g)
    text = str(g)
    assert "%x: f32[4, 8]" in text
    assert "sum %" in text and "dims=(1,)" in text
    assert "return (" in text
    assert g.op_counts()["add"] == 2
    x = g.inputs[0]
    assert [u.op for u in x.users] == ["mul"]
    assert g.nodes[0].out.users[0].op == "add"
    assert "->" in g.to_dot()
    assert g.to_networkx().number_of_nodes() == len(g.all_values())


def test_interpreter_matches_numpy():
    g = _graph()
    X = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    W = np.random.default_rng(1).standard_normal(8).astype(np.float32)
    f, s = interpret(g, [X, W], check=True)
    d = X * W + np.float32(1.5) + np.arange(8, dtype=np.float32)
    np.testing.assert_allclose(f, d.sum(1, keepdims=True).astype(np.float64), rtol=1e-5)
    np.testing.assert_allclose(s, d.T[1::2, 0])
    assert f.dtype == np.float64


def test_eval_op_promotes_like_eager():
    out = eval_op("add", [np.ones(3, np.float32), 2.5])
    assert out.dtype == np.float32
    out = eval_op("exp", [np.arange(3)])
    assert out.dtype == np.float32
    out = eval_op("lt", [np.ones(3, np.float32), np.ones(3, np.float64)])
    assert out.dtype == np.bool_


def test_verify_catches_errors():
    g = _graph()
    g.nodes[0].out.shape = (4, 9)
    with pytest.raises(GraphError, match="shape rule"):
        verify(g)
    g = _graph()
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]
    with pytest.raises(GraphError, match="before it is defined"):
        verify(g)
    g.toposort()
    verify(g)


def test_json_round_trip():
    g = _graph()
    text = serialize.dumps(g)
    g2 = serialize.loads(text)
    verify(g2)
    assert str(g2) == str(g)
    X = np.ones((4, 8), np.float32)
    W = np.full(8, 2.0, np.float32)
    for a, b in zip(interpret(g, [X, W]), interpret(g2, [X, W])):
        np.testing.assert_array_equal(a, b)


def test_json_rejects_bad_files():
    d = serialize.to_dict(_graph())
    d["nodes"][0]["op"] = "no_such_op"
    with pytest.raises(serialize.GraphFormatError, match=r"nodes\[0\]\.op"):
        serialize.from_dict(d)
    d = serialize.to_dict(_graph())
    d["nodes"][1]["inputs"][0] = {"v": "nope"}
    with pytest.raises(serialize.GraphFormatError, match="undefined value"):
        serialize.from_dict(d)
    d = serialize.to_dict(_graph())
    d["nodes"][0]["out"]["shape"] = [3, 3]
    with pytest.raises(serialize.GraphFormatError):
        serialize.from_dict(d)
    with pytest.raises(serialize.GraphFormatError, match="JSON"):
        serialize.loads("{not json")
    assert json.loads(serialize.dumps(_graph()))["format"] == "gcompile.graph"


def test_replace_and_copy():
    g = _graph()
    h = g.copy()
    verify(h)
    assert str(h) == str(g)
    n = h.nodes[1]  # add a, 1.5
    h.replace_all_uses(n.out, h.nodes[0].out)
    h.remove_node(n)
    verify(h)
    assert len(h.nodes) == len(g.nodes) - 1


def test_names_stay_unique_through_removals_copies_and_round_trips():
    """Inputs and constants get names no value of the graph has had (kept in a set, not
    rebuilt from every value per new input); a copy and a JSON round trip keep them."""
    g = Graph("names")
    a = g.add_input((2,), dt.float32, "x")
    b = g.add_input((2,), dt.float32, "x")
    c = g.add_const(np.ones(2, np.float32), "x")
    assert (a.name, b.name, c.name) == ("x", "x_1", "x_2")
    assert g.add_input((2,), dt.float32, "7").name == "7_1"  # digits are node names
    n = g.add_node("add", [a, b])
    g.set_outputs([n])
    g.remove_unused_constants()  # c goes; its name stays taken
    assert c not in g.constants
    assert g.add_const(np.zeros(2, np.float32), "x_2").name == "x_2_1"
    h = g.copy()
    assert h.add_input((2,), dt.float32, "x").name == "x_3"
    assert g.add_input((2,), dt.float32, "x").name == "x_3"  # the copy's set is its own
    r = serialize.loads(serialize.dumps(g))
    names = [v.name for v in r.all_values()]
    assert len(names) == len(set(names))
    assert r.add_input((2,), dt.float32, names[-1]).name == names[-1] + "_1"


def test_replace_input_keeps_users_consistent():
    g = Graph()
    x = g.add_input((3,), dt.float32)
    y = g.add_input((3,), dt.float32)
    s = g.add_node("add", [x, x])
    g.set_outputs([s])
    n = s.producer
    g.replace_input(n, 0, y)  # x is still operand 1: still a user
    assert n in x.users and n in y.users
    g.replace_input(n, 1, y)
    assert n not in x.users and y.users.count(n) == 1
    verify(g)
    a, b = np.ones(3, np.float32), np.full(3, 2.0, np.float32)
    np.testing.assert_array_equal(interpret(g, [a, b])[0], b + b)
