import numpy as np

from smose.training.buffer import ReplayBuffer


def test_rows_round_trip_and_wrap_around():
    buf = ReplayBuffer(5, 3, 2)
    for i in range(7):
        buf.add(np.full(3, i), np.full(2, -i), float(i) / 10, np.full(3, i + 0.5), i % 2 == 0)
    assert buf.size == 5 and buf.pos == 2
    # Rows 0 and 1 were overwritten by transitions 5 and 6.
    assert buf.data[0, 0] == 5 and buf.data[1, 0] == 6
    batch = buf.sample(200, np.random.default_rng(0))
    ids = batch.obs[:, 0].numpy()
    assert set(ids.astype(int)) == {2, 3, 4, 5, 6}
    np.testing.assert_allclose(batch.actions.numpy(), -np.repeat(ids[:, None], 2, 1))
    np.testing.assert_allclose(batch.rewards.numpy(), ids / 10, rtol=1e-6)
    np.testing.assert_allclose(batch.next_obs.numpy(), np.repeat(ids[:, None] + 0.5, 3, 1))
    np.testing.assert_array_equal(batch.dones.numpy(), (ids % 2 == 0).astype(np.float32))
    assert str(batch.obs.dtype) == str(batch.rewards.dtype) == "torch.float32"


def test_state_dict_round_trip():
    buf = ReplayBuffer(10, 2, 1)
    for i in range(4):
        buf.add(np.full(2, i), np.zeros(1), 1.0, np.full(2, i), False)
    other = ReplayBuffer(10, 2, 1)
    other.load_state_dict(buf.state_dict())
    np.testing.assert_array_equal(other.data, buf.data)
    assert (other.pos, other.size) == (4, 4)


def test_storage_is_float32_and_sized_by_capacity():
    buf = ReplayBuffer(1000, 105, 8)
    assert buf.data.dtype == np.float32
    assert buf.nbytes == 1000 * (2 * 105 + 8 + 2) * 4
