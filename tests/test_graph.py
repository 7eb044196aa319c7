"""log --graph lanes on small DAGs."""
from dithub.cli.graph import graph_prefixes


def test_linear_history_is_one_lane():
    assert graph_prefixes([("c", ["b"]), ("b", ["a"]), ("a", [])]) == [["*"], ["*"], ["*"]]


def test_merge_opens_and_closes_a_lane():
    # m merges x and y, both children of r
    lines = graph_prefixes([("m", ["x", "y"]), ("y", ["r"]), ("x", ["r"]), ("r", [])])
    assert lines[0] == ["*", "| \\"]          # the merge, then the second parent's lane opens
    assert lines[1] == ["| *"]                # y sits in the second lane
    assert lines[2] == ["* |"]                # x in the first
    assert lines[3] == ["| /", "*"]           # the lanes join at the root
