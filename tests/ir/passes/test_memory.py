"""The arena planner and its checker."""
import pytest

from ir.passes.memory import BufferReq, MemoryPlan, Storage, check_plan, plan_memory


def test_disjoint_lifetimes_share_memory():
    reqs = [BufferReq("a", 1000, 0, 1), BufferReq("b", 1000, 1, 2), BufferReq("c", 1000, 2, 3)]
    plan = plan_memory(reqs)
    check_plan(plan, reqs)
    assert plan.arena_bytes == 2 * 1024  # a and c share, b overlaps both
    assert plan.offsets["a"] == plan.offsets["c"]


def test_in_place_chain_uses_one_storage():
    reqs = [BufferReq("a", 4096, 0, 1), BufferReq("b", 4096, 1, 2, inplace_of="a"),
            BufferReq("c", 4096, 2, 5, inplace_of="b")]
    plan = plan_memory(reqs)
    check_plan(plan, reqs)
    assert plan.arena_bytes == 4096 and len(plan.storages) == 1


def test_best_fit_fills_gaps():
    reqs = [BufferReq("big", 10000, 0, 10), BufferReq("s1", 100, 0, 2),
            BufferReq("s2", 3000, 3, 5), BufferReq("s3", 100, 6, 8)]
    plan = plan_memory(reqs)
    check_plan(plan, reqs)
    assert plan.arena_bytes <= 10048 + 3008


def test_checker_rejects_overlap():
    reqs = [BufferReq("a", 128, 0, 2), BufferReq("b", 128, 1, 3)]
    bad = MemoryPlan([Storage(0, 128, 0, 2, ["a"], 0), Storage(1, 128, 1, 3, ["b"], 64)],
                     {"a": 0, "b": 64}, {"a": 0, "b": 1}, 192)
    with pytest.raises(ValueError, match="overlaps"):
        check_plan(bad, reqs)
    shared = MemoryPlan([Storage(0, 128, 0, 3, ["a", "b"], 0)], {"a": 0, "b": 0},
                        {"a": 0, "b": 0}, 128)
    with pytest.raises(ValueError, match="still read"):
        check_plan(shared, reqs)


def test_bad_inplace_request_is_refused():
    with pytest.raises(ValueError, match="in place"):
        plan_memory([BufferReq("a", 64, 0, 3), BufferReq("b", 64, 1, 2, inplace_of="a")])


def test_checker_finds_an_overlap_among_many_storages():
    """The checker sweeps storages by start step: an overlap between a storage and one
    that started long before it (others started in between) is still found, and plans
    built by the planner over many buffers pass."""
    reqs = [BufferReq(f"r{i}", 64 * (1 + i % 5), i, i + 1 + i % 7) for i in range(60)]
    plan = plan_memory(reqs)
    check_plan(plan, reqs)
    long = [BufferReq("long", 256, 0, 50)] + [BufferReq(f"s{i}", 64, i, i + 1)
                                                for i in range(1, 40)]
    storages = [Storage(0, 256, 0, 50, ["long"], 0)]
    storages += [Storage(i, 64, i, i + 1, [f"s{i}"], 256 + 64 * (i % 2)) for i in range(1, 40)]
    storages[30] = Storage(30, 64, 30, 31, ["s30"], 128)  # inside long's range at step 30
    offsets = {s.buffers[0]: s.offset for s in storages}
    bad = MemoryPlan(storages, offsets, {s.buffers[0]: j for j, s in enumerate(storages)}, 384)
    with pytest.raises(ValueError, match=r"at step 30 storage of \['long'\].*overlaps.*s30"):
        check_plan(bad, long)
