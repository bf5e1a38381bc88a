"""The wire form equals the host path for every registered codec: the stored integers of a batch
(``stored_many`` / ``stored``), augmented, made into ``wire_batch`` / ``wire``, then ``finish`` with torch, give
the arrays of ``decode_many`` + the same augmentations + ``finalize_batch`` (bit for bit; the EnCodec latent's
float sums within rounding); so does ``finish_arrays``, the numpy finish the training process runs on the wire
form process workers hand it; and the wire form is never wider than the outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossyload.augment import latent

from .test_batch import payloads
from .test_contract import CASES, KIND, make, run, sources

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")]


WAYS = ["torch", "arrays"]  # finish (any device) / finish_arrays (host memory, numpy)


def finished(codec, wire: dict[str, np.ndarray], way: str = "torch") -> dict[str, np.ndarray]:
    if way == "arrays":
        if not codec.finishes_arrays():
            pytest.skip(f"{codec.name}: no numpy finish")
        return codec.finish_arrays({k: v.copy() for k, v in wire.items()})
    return {k: v.numpy() for k, v in codec.finish({k: torch.from_numpy(v) for k, v in wire.items()}).items()}


def check(got: dict[str, np.ndarray], want: dict[str, np.ndarray], exact: bool) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        if exact:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        else:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("name, config, options", CASES)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_wire_batch_then_finish_is_the_host_batch(name: str, config: dict, options: dict, train: bool,
                                                  way: str) -> None:
    codec = make(name, config, options)
    transforms = codec.default_transforms(train)
    if not codec.batch_decoding() or not codec.wire_form(transforms):
        return  # the per-sample path (rgb): checked sample by sample below
    data = payloads(codec, KIND[name])
    host, wire = codec.decode_many(data), codec.stored_many(data)
    for t in transforms:  # the same parameters for both
        p = t.params(host, np.random.default_rng(3))
        host, wire = t.apply_batch(host, p), t.apply_batch(wire, p)
    want, sent = codec.finalize_batch(host), codec.wire_batch(wire)
    check(finished(codec, sent, way), want, exact=not (name == "encodec" and codec.options.output == "latent"))
    assert sum(v.nbytes for v in sent.values()) < sum(v.nbytes for v in want.values())


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("name, config, options", CASES)
def test_wire_of_one_sample_then_finish_is_finalize(name: str, config: dict, options: dict, way: str) -> None:
    codec = make(name, config, options)
    transforms = codec.default_transforms(False)
    if not codec.wire_form(transforms):
        return
    exact = not (name == "encodec" and codec.options.output == "latent")
    for source, data in list(sources(KIND[name]).items())[:3]:
        payload = codec.encode(data, source=source).payload
        want = run(codec, payload, train=False, seed=0)
        x = codec.stored(payload)
        for t in transforms:
            x = t(x, np.random.default_rng(0))
        wire = {k: v[None] for k, v in codec.wire(x).items()}
        check({k: v[0] for k, v in finished(codec, wire, way).items()}, want, exact)


def test_vae_wire_form_needs_int8_and_transforms_that_only_move_cells() -> None:
    from .test_contract import VAE

    codec = make("vae", VAE, {})
    assert codec.wire_form([latent.RandomCrop(size=2), latent.HFlip(), latent.RandomView()])
    assert not codec.wire_form([latent.HFlip(), latent.GaussianNoise()])  # arithmetic needs the float values
    assert not make("vae", {"storage": "float16", **VAE, "scale": None, "offset": None}, {}).wire_form([])


@pytest.mark.parametrize("way", WAYS)
def test_vae_finish_dequantizes_each_channel_with_its_own_scale(way: str) -> None:
    from .test_contract import VAE

    codec = make("vae", {**VAE, "scale": [0.01, 0.02, 0.03, 0.04], "offset": [-0.5, 0.0, 0.25, 1.0]}, {})
    data = payloads(codec, "image")
    want, sent = codec.decode_batch(data), codec.wire_batch(codec.stored_many(data))
    check(finished(codec, sent, way), want, exact=True)
