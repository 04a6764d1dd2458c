"""The merge engine: containers, paths, dedup, the plan cache."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import attr
import pytest

from looprt.errors import FetchError
from looprt.structure import PlanCache, flatten, leaf_paths

Pair = collections.namedtuple("Pair", "first second")


@dataclasses.dataclass
class Batch:
    x: Any
    y: Any = None
    cached: Any = dataclasses.field(default="skip", init=False)


@attr.s(auto_attribs=True)
class Metrics:
    _loss: Any
    acc: Any


def test_every_container_type_comes_back_with_values_in_place() -> None:
    structure = {
        "pair": Pair("a", Batch("b", ("c", ["a"]))),
        "od": collections.OrderedDict([("z", "d"), ("y", "b")]),
        "dd": collections.defaultdict(list, {"k": "e"}),
        "m": Metrics("f", "a"),
        "empty": [(), {}, []],
    }
    plan = PlanCache().plan(structure)
    assert plan.leaves == ("a", "b", "c", "d", "e", "f")
    out = plan.rebuild([leaf.upper() for leaf in plan.leaves])
    assert out["pair"] == Pair("A", Batch("B", ("C", ["A"])))
    assert type(out["od"]) is collections.OrderedDict and list(out["od"].items()) == [("z", "D"), ("y", "B")]
    assert type(out["dd"]) is collections.defaultdict and out["dd"].default_factory is list
    assert out["m"] == Metrics("F", "A")
    assert out["empty"] == [(), {}, []]


def test_paths_name_each_leaf() -> None:
    assert leaf_paths({"a": [1, Pair(2, Batch(3))]}) == ["['a'][0]", "['a'][1][0]", "['a'][1][1].x", "['a'][1][1].y"]


def test_cache_hits_for_a_repeated_structure_and_misses_for_new_leaves() -> None:
    cache = PlanCache()
    first = cache.plan({"loss": "l", "step": "s"})
    assert cache.plan({"loss": "l", "step": "s"}) is first
    assert cache.hits == 1
    assert cache.plan({"loss": "l", "step": "t"}) is not first
    assert cache.plan({"step": "s", "loss": "l"}) is not first  # key order is part of the shape
    assert cache.misses == 3


def test_cache_is_bounded() -> None:
    cache = PlanCache(limit=4)
    for i in range(10):
        cache.plan([str(i)])
    assert len(cache) <= 4


def test_deep_structures_rebuild_without_codegen_limits() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    value = PlanCache().plan(deep).rebuild([1])
    for _ in range(300):
        value = value[0]
    assert value == 1


def test_unhashable_leaf_error_names_its_path() -> None:
    with pytest.raises(FetchError, match=r"fetch at \['b'\]\[0\] is a set"):
        PlanCache().plan({"a": "x", "b": [{1}]})


def test_flatten_is_depth_first_in_container_order() -> None:
    _, leaves = flatten({"b": ["1", "2"], "a": ("3",)})
    assert leaves == ["1", "2", "3"]
