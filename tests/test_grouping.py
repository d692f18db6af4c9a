"""ptycholib.grouping: K-nearest-neighbour groups, oversampling limits, fixed groups and g."""

import math

import numpy as np
import pytest

from ptycholib import grouping


@pytest.fixture
def scan(rng):
    """A jittered 7 x 6 raster (42 positions, no ties between distances)."""
    y, x = np.meshgrid(np.arange(6) * 4.0, np.arange(7) * 4.0, indexing="ij")
    return x.ravel() + rng.normal(0, 0.4, 42), y.ravel() + rng.normal(0, 0.4, 42)


def _distances(x_px, y_px):
    points = np.stack([x_px, y_px], 1)
    return np.linalg.norm(points[:, None] - points[None], axis=-1)


def _check_groups(groups, x_px, y_px, channels, neighbor_count):
    distances = _distances(x_px, y_px)
    assert groups.indices.dtype == np.int64 and groups.offsets.dtype == np.float32
    assert groups.indices.shape[1] == channels == groups.channels and groups.offsets.shape[1:] == (channels, 2)
    members = np.stack([x_px[groups.indices], y_px[groups.indices]], -1)
    np.testing.assert_allclose(groups.centres, members.mean(1))
    np.testing.assert_allclose(groups.offsets, members - members.mean(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(groups.offsets.mean(1), 0, atol=1e-5)
    for seed, row in zip(groups.seeds, groups.indices):
        assert len(set(row.tolist())) == channels
        kth = np.sort(distances[seed])[neighbor_count - 1]
        assert (distances[seed, row] <= kth + 1e-12).all()  # every member is among the seed's K nearest


def test_gridsize_one_groups_are_the_positions(scan):
    x_px, y_px = scan
    groups = grouping.group_neighbors(x_px, y_px, 1, neighbor_count=4)
    assert groups.indices[:, 0].tolist() == list(range(42)) and groups.gridsize == 1
    assert not groups.offsets.any()
    np.testing.assert_array_equal(groups.centres, np.stack([x_px, y_px], 1))
    subset = grouping.group_neighbors(x_px, y_px, 1, neighbor_count=4, n_groups=10, seed=3)
    assert subset.n_groups == 10 and len(set(subset.indices[:, 0].tolist())) == 10
    with pytest.raises(ValueError, match="gridsize 1 a group is one position, so at most 42 groups"):
        grouping.group_neighbors(x_px, y_px, 1, neighbor_count=4, n_groups=43)


@pytest.mark.parametrize("gridsize, neighbor_count", [(2, 4), (2, 7), (3, 12)])
def test_random_groups_are_members_of_the_k_nearest(scan, gridsize, neighbor_count):
    x_px, y_px = scan
    groups = grouping.group_neighbors(x_px, y_px, gridsize, neighbor_count=neighbor_count, seed=5)
    assert groups.n_groups == 42 and groups.gridsize == gridsize
    assert len(set(groups.seeds.tolist())) == 42  # up to n_positions groups, every seed once
    _check_groups(groups, x_px, y_px, gridsize**2, neighbor_count)


def test_groups_are_deterministic_for_a_seed(scan):
    x_px, y_px = scan
    first = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=7, n_groups=30, seed=9)
    second = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=7, n_groups=30, seed=9)
    other = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=7, n_groups=30, seed=10)
    np.testing.assert_array_equal(first.indices, second.indices)
    np.testing.assert_array_equal(first.offsets, second.offsets)
    assert not np.array_equal(first.indices, other.indices)


def test_sequential_groups_are_each_position_with_its_nearest(scan):
    x_px, y_px = scan
    groups = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=7, sequential=True)
    distances = _distances(x_px, y_px)
    assert groups.seeds.tolist() == list(range(42))
    for seed, row in enumerate(groups.indices):
        assert sorted(row.tolist()) == sorted(np.argsort(distances[seed])[:4].tolist())
        assert row[0] == seed
    more = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=7, n_groups=84, sequential=True)
    np.testing.assert_array_equal(more.indices[:42], groups.indices)
    assert more.seeds[42:].tolist() == list(range(42))  # the next subset of every seed


def test_oversampling_draws_distinct_subsets_up_to_the_limit(scan):
    x_px, y_px = scan
    neighbor_count, channels = 6, 4
    limit = 42 * math.comb(neighbor_count, channels)
    groups = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=neighbor_count, n_groups=200, seed=1)
    assert groups.n_groups == 200
    _check_groups(groups, x_px, y_px, channels, neighbor_count)
    keys = {(s, tuple(sorted(r))) for s, r in zip(groups.seeds.tolist(), groups.indices.tolist())}
    assert len(keys) == 200
    every = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=neighbor_count, n_groups=limit, seed=2)
    assert len({(s, tuple(sorted(r))) for s, r in zip(every.seeds.tolist(), every.indices.tolist())}) == limit
    with pytest.raises(ValueError, match=f"n_groups={limit + 1} exceeds the {limit} distinct groups"):
        grouping.group_neighbors(x_px, y_px, 2, neighbor_count=neighbor_count, n_groups=limit + 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gridsize": 2, "neighbor_count": 3}, "neighbor_count=3 is smaller than gridsize\\*\\*2 = 4"),
        ({"gridsize": 2, "neighbor_count": 50}, "neighbor_count=50 exceeds the 42 scan positions"),
        ({"gridsize": 0, "neighbor_count": 4}, "gridsize must be a positive integer"),
        ({"gridsize": 2, "neighbor_count": 4, "n_groups": 0}, "n_groups must be a positive integer"),
    ],
)
def test_grouping_errors(scan, kwargs, message):
    gridsize = kwargs.pop("gridsize")
    with pytest.raises(ValueError, match=message):
        grouping.group_neighbors(*scan, gridsize, **kwargs)


def test_position_errors():
    with pytest.raises(ValueError, match="x_px has 3 entries but y_px has 2"):
        grouping.group_neighbors(np.zeros(3), np.zeros(2), 1, neighbor_count=1)
    with pytest.raises(ValueError, match="non-finite"):
        grouping.group_neighbors(np.array([0.0, np.nan]), np.zeros(2), 1, neighbor_count=1)


def test_groups_from_indices():
    x_px, y_px = np.array([0.0, 4.0, 0.0, 4.0, 10.0]), np.array([0.0, 0.0, 4.0, 4.0, 10.0])
    groups = grouping.groups_from_indices(x_px, y_px, np.array([[0, 1, 2, 3]]))
    assert groups.offsets[0].tolist() == [[-2, -2], [2, -2], [-2, 2], [2, 2]] and groups.seeds.tolist() == [0]
    with pytest.raises(ValueError, match="gridsize\\*\\*2"):
        grouping.groups_from_indices(x_px, y_px, np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="must lie in \\[0, 4\\]"):
        grouping.groups_from_indices(x_px, y_px, np.array([[0, 1, 2, 5]]))


def test_input_scale_normalises_mean_energy(tiny_dataset):
    scale = grouping.input_scale(tiny_dataset.amplitudes)
    energy = np.sum((scale * tiny_dataset.amplitudes.astype(np.float64)) ** 2, axis=(1, 2)).mean()
    assert energy == pytest.approx((64 / 2) ** 2, rel=1e-9)
    with pytest.raises(ValueError, match="mean energy 0.0"):
        grouping.input_scale(np.zeros((2, 64, 64)))


# ------------------------------------------------------------------------------------------------
# several objects in one data set: groups never mix them


def _check_one_object_per_group(groups, x_px, y_px, object_index, neighbor_count):
    members = object_index[groups.indices]
    assert (members == members[:, :1]).all()  # every group's members share one object
    assert (members[:, 0] == object_index[groups.seeds]).all()
    for seed, row in zip(groups.seeds, groups.indices):  # and are among the K nearest of that object
        same = np.flatnonzero(object_index == object_index[seed])
        distances = np.hypot(x_px[same] - x_px[seed], y_px[same] - y_px[seed])
        kth = np.sort(distances)[neighbor_count - 1]
        assert (np.hypot(x_px[row] - x_px[seed], y_px[row] - y_px[seed]) <= kth + 1e-12).all()


@pytest.mark.parametrize("options", [{"seed": 4}, {"sequential": True}, {"n_groups": 150, "seed": 1}])
def test_groups_stay_within_one_object(scan, options):
    x_px, y_px = scan
    object_index = np.arange(42) % 3  # interleaved objects: plain K-NN would mix them everywhere
    groups = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=6, object_index=object_index, **options)
    assert groups.n_groups == options.get("n_groups", 42)  # n_groups is the total over the objects
    _check_one_object_per_group(groups, x_px, y_px, object_index, 6)
    again = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=6, object_index=object_index, **options)
    np.testing.assert_array_equal(groups.indices, again.indices)
    mixed = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=6, **options)
    assert not (object_index[mixed.indices] == object_index[mixed.indices][:, :1]).all()


def test_one_object_index_gives_the_same_groups(scan):
    x_px, y_px = scan
    for options in ({"seed": 4}, {"sequential": True}, {"n_groups": 150, "seed": 1}):
        plain = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=6, **options)
        for object_index in (np.zeros(42, np.int64), np.full(42, 5, np.int32)):
            same = grouping.group_neighbors(x_px, y_px, 2, neighbor_count=6, object_index=object_index, **options)
            np.testing.assert_array_equal(plain.indices, same.indices)
            np.testing.assert_array_equal(plain.offsets, same.offsets)
    single = grouping.group_neighbors(x_px, y_px, 1, neighbor_count=1, object_index=np.arange(42) % 2)
    assert single.indices[:, 0].tolist() == list(range(42))


@pytest.mark.parametrize(
    "object_index, message",
    [
        (np.zeros(42), "object_index must hold integers"),
        (np.zeros(41, np.int64), "object_index has shape \\(41,\\)"),
        (np.full(42, -1), "object_index has 42 negative values"),
        (np.r_[np.zeros(38, np.int64), np.ones(4, np.int64)], "object 1 has 4 scan positions but neighbor_count=6"),
    ],
)
def test_object_index_errors(scan, object_index, message):
    with pytest.raises(ValueError, match=message):
        grouping.group_neighbors(*scan, 2, neighbor_count=6, object_index=object_index)


def test_workflow_groups_respect_the_objects_of_a_simulation():
    from ptycholib import config, simulate, workflow

    train, _ = simulate.simulate_train_test(n_train=30, n_test=4, nphotons=1e6, noise=False, seed=0, n_objects=3)
    groups = workflow.inference_groups(train, config.ModelConfig(gridsize=2), neighbor_count=7)
    assert groups.n_groups == 30
    _check_one_object_per_group(groups, train.x_px, train.y_px, train.object_index, 7)


def test_train_model_groups_within_objects(monkeypatch):
    """workflow.train_model hands the data's object_index to the grouping (no backend needed)."""
    from ptycholib import config, simulate, workflow

    class Seen(Exception):
        pass

    def spy(*args, object_index=None, **kwargs):
        raise Seen(object_index)

    train, _ = simulate.simulate_train_test(n_train=12, n_test=4, nphotons=1e6, noise=False, seed=0, n_objects=2)
    monkeypatch.setattr(workflow, "get_backend", lambda name: None)
    monkeypatch.setattr(workflow.grouping, "group_neighbors", spy)
    with pytest.raises(Seen) as seen:
        workflow.train_model(train, config.Config(), progress=False)
    assert seen.value.args[0] is train.object_index
