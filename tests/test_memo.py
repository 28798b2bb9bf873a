"""remembered(): small figures computed once per key and kept in the cache dir."""
from __future__ import annotations

from wbclf.data.cache import remembered


def test_a_figure_is_computed_once_per_key(tmp_path):
    calls: list[int] = []

    def compute() -> dict:
        calls.append(1)
        return {"flops": 123, "mask": [True, False]}

    assert remembered("k", {"a": 1}, compute, tmp_path) == ({"flops": 123, "mask": [True, False]},
                                                           False)
    assert remembered("k", {"a": 1}, compute, tmp_path) == ({"flops": 123, "mask": [True, False]},
                                                           True)
    assert len(calls) == 1
    remembered("k", {"a": 2}, compute, tmp_path)  # another key
    remembered("other", {"a": 1}, compute, tmp_path)  # another kind
    assert len(calls) == 3


def test_a_torn_entry_is_computed_again(tmp_path):
    remembered("k", {"a": 1}, lambda: 5, tmp_path)
    (entry,) = (tmp_path / "memo" / "k").iterdir()
    entry.write_text('{"key": ')  # a crash half-way through another writer
    assert remembered("k", {"a": 1}, lambda: 6, tmp_path) == (6, False)
    assert remembered("k", {"a": 1}, lambda: 7, tmp_path) == (6, True)


def test_a_cache_dir_that_cannot_be_written_costs_time_only(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")  # no memo folder can be made below it, even as root
    assert remembered("k", {"a": 1}, lambda: 5, blocked) == (5, False)
    assert remembered("k", {"a": 1}, lambda: 6, blocked) == (6, False)
