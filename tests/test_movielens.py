"""The real embedded dataset (fetched by `make setup`): counts and split sizes of MovieLens-100K."""

import pytest

from learec.config import DataConfig
from learec.data.prepared import prepare
from learec.data.registry import raw_dir

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (raw_dir("movielens-100k") / "ml-100k.inter").is_file(),
                                 reason="MovieLens-100K not fetched (run `make setup`)")]


def test_movielens_100k_loo():
    data = prepare(DataConfig(dataset="movielens-100k", protocol="loo", history=50))
    s = data.stats
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100000)
    assert s["sequence_length"]["min"] == 20 and s["sequence_length"]["max"] == 737
    # RecBole's count: every rating but each user's first, validation and test items.
    assert s["split"] == {"train_transitions": 100000 - 3 * 943, "val_events": 943, "test_events": 943}
    assert data.sequences.item_text[0] == "Toy Story (1995), genres: Animation, Children's, Comedy"
    assert data.sequences.item_ids[:3] == ["1", "2", "3"]


def test_movielens_100k_sqn():
    data = prepare(DataConfig(dataset="movielens-100k", protocol="sqn", history=10))
    s = data.stats["split"]
    assert s["train_transitions"] + s["val_events"] + s["test_events"] == 100000
    assert len(set(data.val.user.tolist()) & set(data.test.user.tolist())) == 0
    assert data.train.state.shape[1] == 10
