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


def test_a_fresh_value_comes_back_as_a_remembered_one_would(tmp_path):
    fresh, _ = remembered("k", {"a": 1}, lambda: {"pair": (1, 2)}, tmp_path)
    again, reused = remembered("k", {"a": 1}, lambda: None, tmp_path)
    assert reused and fresh == again == {"pair": [1, 2]}


def test_the_model_digest_sees_what_the_module_tree_does_not_print():
    """repr() of a module shows its layers, not bare parameters or buffers: two models that
    print alike but differ in a parameter's shape must not share remembered FLOPs or speed."""
    import torch
    from torch import nn

    from wbclf.models import model_digest

    class Tokens(nn.Module):
        def __init__(self, count: int) -> None:
            super().__init__()
            self.tokens = nn.Parameter(torch.zeros(count, 8))
            self.proj = nn.Linear(8, 2)

    assert repr(Tokens(1)) == repr(Tokens(4))
    assert model_digest(Tokens(1)) != model_digest(Tokens(4))
    assert model_digest(Tokens(4)) == model_digest(Tokens(4))  # weights' values do not count
    assert model_digest(Tokens(4)) != model_digest(Tokens(4).half())


def test_the_model_digest_leaves_dropout_layers_out():
    """In eval mode a dropout layer passes its input through: a head study's dropout values,
    0 (a bare Linear head) included, share one speed measurement; a layer more, another
    width or another setting of a layer that computes does not."""
    import torch
    from timm.layers import DropPath
    from torch import nn

    from wbclf.models import build_head, model_digest

    assert model_digest(build_head(16, 2, hidden=8, dropout=0.0)) \
        == model_digest(build_head(16, 2, hidden=8, dropout=0.3))
    assert model_digest(nn.Sequential(nn.Linear(4, 4), nn.Dropout2d(0.1), DropPath(0.1))) \
        == model_digest(nn.Sequential(nn.Linear(4, 4), nn.Dropout2d(p=0.5), DropPath(0.2)))
    # Linear against Sequential(Dropout, Linear): the same computation in eval mode
    assert isinstance(build_head(16, 2), nn.Linear)
    assert model_digest(build_head(16, 2)) == model_digest(build_head(16, 2, dropout=0.3))
    in_place = nn.Sequential(nn.Dropout(0.1, inplace=True), nn.Identity(), nn.Linear(4, 4))
    assert model_digest(nn.Linear(4, 4)) == model_digest(in_place)
    assert model_digest(build_head(16, 2, hidden=8)) != model_digest(build_head(16, 2, hidden=9))
    assert model_digest(build_head(16, 2)) != model_digest(build_head(16, 2, hidden=8))
    assert model_digest(nn.Linear(4, 4)) != model_digest(nn.Linear(4, 4, bias=False))
    assert model_digest(nn.Linear(4, 4)) != model_digest(nn.Sequential(nn.Linear(4, 4),
                                                                       nn.ReLU()))

    class Scaled(nn.Sequential):  # a subclass computes as it likes, with its own parameter
        def __init__(self, size: int) -> None:
            super().__init__(nn.Linear(4, 4))
            self.scale = nn.Parameter(torch.ones(size))

    assert len({model_digest(nn.Linear(4, 4)), model_digest(Scaled(4)),
                model_digest(Scaled(1))}) == 3
