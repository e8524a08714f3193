"""packing: LSB-first bit stream, hand-worked layouts, round trips, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tqref.reference.packing import pack_bits, packed_size, unpack_bits

HAND = [
    # bits, indices, bytes (worked by hand from the LSB-first definition)
    (1, [1, 0, 1, 1, 0, 0, 0, 0, 1], [0b00001101, 0b00000001]),
    (2, [1, 2, 3, 0, 3], [0b00111001, 0b00000011]),
    (3, [5, 2, 7], [0xD5, 0x01]),
    (3, [1, 2, 3, 4, 5, 6, 7, 0], [0xD1, 0x58, 0x1F]),
    (4, [0xA, 0x5, 0xF], [0x5A, 0x0F]),
    (5, [31, 1], [0x3F, 0x00]),
    (6, [0x2A, 0x15, 0x3F], [0x6A, 0xF5, 0x03]),
    (7, [0x7F, 0x00, 0x01], [0x7F, 0x40, 0x00]),
    (8, [0, 255, 17], [0, 255, 17]),
]


@pytest.mark.parametrize("bits,indices,expected", HAND)
def test_hand_worked_layouts(bits, indices, expected):
    packed = pack_bits(np.array(indices), bits)
    assert packed.dtype == np.uint8 and packed.tolist() == expected
    assert unpack_bits(packed, bits, len(indices)).tolist() == indices


@given(st.integers(1, 8), st.data())
def test_round_trip_every_width(bits, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=40))
    idx = data.draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 2**bits - 1)))
    packed = pack_bits(idx, bits)
    assert packed.shape == shape[:-1] + (packed_size(shape[-1], bits),)
    assert np.array_equal(unpack_bits(packed, bits, shape[-1]), idx)


@given(st.integers(1, 7), hnp.arrays(np.int64, st.integers(1, 30), elements=st.integers(0, 2**20)))
def test_only_low_bits_are_used(bits, idx):
    assert np.array_equal(pack_bits(idx, bits), pack_bits(idx & (2**bits - 1), bits))


def test_padding_bits_are_zero():
    packed = pack_bits(np.array([7, 7, 7]), 3)  # 9 bits -> 2 bytes, top 7 bits zero
    assert packed.tolist() == [0xFF, 0x01]


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="bits"):
        pack_bits(np.zeros(3, np.uint8), 9)
    with pytest.raises(ValueError, match="indices"):
        pack_bits(np.zeros(3, np.float32), 2)
    with pytest.raises(ValueError, match=r"packed: expected 2 bytes .* got 3"):
        unpack_bits(np.zeros(3, np.uint8), 3, 3)
    with pytest.raises(ValueError, match="uint8"):
        unpack_bits(np.zeros(2, np.int32), 3, 3)
