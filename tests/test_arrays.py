import numpy as np
import pytest

from provenance.arrays import unique_sorted


@pytest.mark.parametrize("values", [
    np.array([], dtype=np.int64),
    np.array([7], dtype=np.uint64),
    np.array([3, 1, 3, 2, 1, 3], dtype=np.int64),
    np.random.default_rng(0).integers(0, 50, 1000).astype(np.uint64),
    np.random.default_rng(1).integers(-2**62, 2**62, 5000),
    np.array([[4, 2], [2, 9]], dtype=np.int32),  # flattened, as np.unique does
])
def test_unique_sorted_equals_np_unique(values):
    got = unique_sorted(values)
    assert got.dtype == values.dtype
    np.testing.assert_array_equal(got, np.unique(values))


def test_unique_sorted_of_fixed_width_keys_with_zero_bytes():
    # doc_id keys are S16 values; numpy drops a value's trailing zero bytes, so compare as written
    rows = np.array([[0] * 15 + [1], [0] * 16, [0] * 15 + [1], [255] + [0] * 15], dtype=np.uint8)
    keys = rows.view("S16").reshape(-1)
    got = unique_sorted(keys)
    assert got.tolist() == np.unique(keys).tolist() == [b"", b"\0" * 15 + b"\1", b"\xff"]


def test_unique_sorted_leaves_its_input_alone():
    values = np.array([3, 1, 2, 1])
    unique_sorted(values)
    assert values.tolist() == [3, 1, 2, 1]
