import numpy as np
import pytest

from geoml_plugin.core.errors import InputError
from geoml_plugin.core.fewshot.episodes import EpisodeSampler, PatchBank, holdout_split


def _bank(per_class=(10, 10, 10, 4), regions=1):
    ys, rs = [], []
    for r in range(regions):
        for c, n in enumerate(per_class):
            ys += [c] * n
            rs += [r] * n
    y = np.array(ys)
    x = np.arange(len(y), dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 4, 4), np.float32)
    return PatchBank(x, y, ["a", "b", "c", "d"], np.array(rs))


def test_episode_is_n_way_k_shot_with_disjoint_support_and_query():
    bank = _bank()
    s = EpisodeSampler(bank, ways=3, shots=2, query=3, seed=0)
    for _ in range(20):
        e = s.sample()
        assert len(e.support) == 6 and len(e.query) == 9
        assert not set(e.support) & set(e.query)
        assert 3 not in e.classes  # class 'd' has only 4 < 2 + 3 patches
        for way, c in enumerate(e.classes):
            assert (bank.y[e.support[e.support_labels == way]] == c).all()
            assert (bank.y[e.query[e.query_labels == way]] == c).all()
    xs, ys, xq, yq = s.batch(4)
    assert xs.shape == (4, 6, 2, 4, 4) and xq.shape == (4, 9, 2, 4, 4)
    assert ys.tolist()[0] == [0, 0, 1, 1, 2, 2]


def test_episodes_stay_inside_one_region():
    bank = _bank(regions=3)
    s = EpisodeSampler(bank, ways=3, shots=1, query=2, seed=1)
    seen = set()
    for _ in range(30):
        e = s.sample()
        idx = np.concatenate([e.support, e.query])
        assert len(set(bank.region[idx])) == 1
        seen.add(e.region)
    assert seen == {0, 1, 2}


def test_same_seed_same_episodes():
    a = EpisodeSampler(_bank(), 3, 2, 3, seed=5).batch(3)
    b = EpisodeSampler(_bank(), 3, 2, 3, seed=5).batch(3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_too_few_classes_for_ways_is_explained():
    with pytest.raises(InputError, match=r"need 4 classes \(WAYS\) with at least 5 labelled patches.*d 4"):
        EpisodeSampler(_bank(), ways=4, shots=2, query=3)


def test_more_shots_than_patches_is_explained():
    with pytest.raises(InputError, match="at least 13 labelled patches") as err:
        EpisodeSampler(_bank(), ways=2, shots=10, query=3)
    # two classes is the least an episode takes (the automatic WAYS' floor): the hint does not offer fewer
    assert err.value.hint == "Lower SHOTS or QUERY, or add labels: an episode needs at least 2 classes."
    with pytest.raises(InputError) as err:
        EpisodeSampler(_bank(), ways=3, shots=10, query=3)
    assert err.value.hint == "Lower WAYS, SHOTS or QUERY, or add labels."


def test_holdout_split_is_disjoint_and_keeps_enough_for_training():
    bank = _bank(per_class=(20, 20, 20, 4))
    train, val = holdout_split(bank, shots=2, query=3, fraction=0.2, seed=0)
    assert len(train) + len(val) == len(bank)
    assert not set(train.x[:, 0, 0, 0]) & set(val.x[:, 0, 0, 0])
    assert np.bincount(val.y, minlength=4).tolist() == [4, 4, 4, 0]  # 'd' too small to split
    EpisodeSampler(val, ways=3, shots=2, query=2)  # validation episodes can be drawn


def test_automatic_ways_takes_every_usable_class_up_to_the_cap():
    from geoml_plugin.core.fewshot.metatrain import AUTO_WAYS_MAX, auto_ways

    def bank(counts, regions=None):
        y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
        r = np.zeros(len(y), np.int64) if regions is None else np.asarray(regions)
        return PatchBank(np.zeros((len(y), 1, 4, 4), np.float32), y, [f"c{c}" for c in range(len(counts))], r)

    assert auto_ways(bank([10, 10, 10]), shots=5, query=5) == 3
    assert auto_ways(bank([10] * 9), shots=5, query=5) == AUTO_WAYS_MAX == 6
    # a class with fewer than SHOTS + QUERY patches cannot be in an episode
    assert auto_ways(bank([10, 10, 10, 9]), shots=5, query=5) == 3
    # episodes stay inside one raster: the raster with the most usable classes counts
    two = bank([10, 10, 10, 10, 10], regions=[0] * 30 + [1] * 20)
    assert auto_ways(two, shots=5, query=5) == 3
    # below 2 the episode sampler refuses with the counts: automatic asks for 2
    assert auto_ways(bank([10, 3]), shots=5, query=5) == 2
