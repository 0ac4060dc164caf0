"""dce / cse / constant folding keep results equal to the interpreter's."""
import numpy as np

from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from ir.passes import cse, dce, fold_constants, simplify
from ir.verify import verify


def test_cleanup_passes():
    g = Graph()
    x = g.add_input((4, 8), dt.float32, "x")
    c = g.add_const(np.ones(8, np.float32))
    a = g.add_node("mul", [x, 2.0])
    b = g.add_node("mul", [x, 2.0])
    e = g.add_node("exp", [c])
    s = g.add_node("add", [a, b])
    t = g.add_node("add", [s, e])
    g.add_node("tanh", [x])  # dead
    g.set_outputs([t])
    X = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    ref = interpret(g, [X])[0]
    assert fold_constants(g) == 1
    verify(g)
    assert cse(g) == 1
    verify(g)
    assert dce(g) == 1
    verify(g)
    assert simplify(g) == {"folded": 0, "cse": 0, "dce": 0}
    assert [n.op for n in g.nodes] == ["mul", "add", "add"]
    np.testing.assert_allclose(interpret(g, [X])[0], ref)
