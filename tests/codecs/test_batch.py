"""The batch path equals the per-sample path for every registered codec: ``decode_many`` + the transforms'
batch forms + ``finalize_batch`` give, sample for sample, the arrays of ``decode`` + the per-sample
transforms with the same parameters + ``finalize``; a bad payload inside a batch is the per-sample error."""

from __future__ import annotations

import numpy as np
import pytest

from lossyload.augment import sample_params
from lossyload.codecs import Codec
from lossyload.errors import DecodeError

from .test_contract import CASES, KIND, make, sources

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")]


def payloads(codec: Codec, kind: str) -> list[bytes]:
    """Every source of the kind encoded, each twice (a batch of 8 with repeats, in a mixed order)."""
    encoded = [codec.encode(data, source=name).payload for name, data in sources(kind).items()]
    return [encoded[i] for i in (0, 1, 2, 0, 1, 2, 0, 1) if i < len(encoded)] + encoded[3:]


def per_sample(codec: Codec, payload: bytes, transforms: list, params: list[dict], i: int) -> dict[str, np.ndarray]:
    x = codec.decode(payload)
    for t, p in zip(transforms, params):
        x = t.apply(x, sample_params(p, i))
    return codec.finalize(x)


@pytest.mark.parametrize("name, config, options", CASES)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batch_equals_per_sample(name: str, config: dict, options: dict, train: bool) -> None:
    codec = make(name, config, options)
    fixed_size = name in ("vae", "vq", "encodec") or (name == "jpeg-dct" and config.get("storage") == "coefficients")
    assert codec.batch_decoding() == fixed_size  # the others keep the per-sample path
    if not fixed_size:
        return
    data = payloads(codec, KIND[name])
    transforms = codec.default_transforms(train)
    rng = np.random.default_rng(5)
    batch, params = codec.decode_many(data), []
    for t in transforms:
        params.append(t.params(batch, rng))
        batch = t.apply_batch(batch, params[-1])
    out = codec.finalize_batch(batch)
    for i, payload in enumerate(data):
        want = per_sample(codec, payload, transforms, params, i)
        assert out.keys() == want.keys()
        for k in want:
            assert out[k].dtype == want[k].dtype and out[k].shape[1:] == want[k].shape, (k, i)
            np.testing.assert_array_equal(out[k][i], want[k], err_msg=f"{k} of sample {i}")
    assert all(len(v) == len(data) for v in out.values())


@pytest.mark.parametrize("name, config, options", CASES)
def test_decode_batch_is_decode_then_finalize(name: str, config: dict, options: dict) -> None:
    """``decode_batch`` (no augmentation) on members of one size is ``finalize(decode(p))`` stacked."""
    codec = make(name, config, options)
    if not codec.batch_decoding():
        return
    data = [codec.encode(d, source=n).payload for n, d in sources(KIND[name]).items()][:1] * 3
    out = codec.decode_batch(data)
    want = codec.finalize(codec.decode(data[0]))
    for k in want:
        assert out[k].shape == (3, *want[k].shape)
        for row in out[k]:
            np.testing.assert_array_equal(row, want[k])


@pytest.mark.parametrize("name, config, options", CASES)
@pytest.mark.parametrize("bad", [b"", b"definitely not a payload", "truncated"])
def test_a_bad_payload_in_a_batch_is_the_per_sample_error(name: str, config: dict, options: dict, bad) -> None:
    codec = make(name, config, options)
    if not codec.batch_decoding():
        return
    good = payloads(codec, KIND[name])
    bad = good[0][: len(good[0]) // 2] if bad == "truncated" else bad
    with pytest.raises(DecodeError) as per:
        codec.decode(bad)
    with pytest.raises(DecodeError) as batched:
        codec.decode_many(good[:2] + [bad] + good[2:])
    assert str(batched.value) == str(per.value)
