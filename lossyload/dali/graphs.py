"""The DALI form of each codec: what the reader reads (member dtype) and the graph from the member to the
same output tensor the codec's ``decode`` + augmentations + ``finalize`` give on the torch path.

Only codecs whose member DALI can reinterpret or decode natively have a form (:data:`FORMS`): ``vae`` (raw
int8/float16 latents, dequantized with the index's affine) and ``rgb`` (JPEG through DALI's image decoder);
every other codec says why not in its ``no_dali_form``. Augmentations
are the same lossyload dataclasses, each translated to DALI operators; one without a DALI form is refused
with :class:`DaliUnsupportedError` -- the DALI backend never falls back to the torch path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..augment import latent, rgb
from ..codecs import Codec
from ..errors import DaliUnsupportedError

VAE_TRANSFORMS = (latent.View, latent.RandomView, latent.HFlip, latent.RandomCrop, latent.CenterCrop,
                  latent.GaussianNoise, latent.PosteriorSample)
RGB_TRANSFORMS = (rgb.RandomResizedCrop, rgb.ResizeCenterCrop, rgb.HFlip)


def check(codec: Codec, transforms: list) -> None:
    """Raise :class:`DaliUnsupportedError` unless ``codec`` and every one of ``transforms`` have a DALI form."""
    if codec.no_dali_form is not None or codec.name not in FORMS:
        raise DaliUnsupportedError(f"codec {codec.name!r} has no DALI form: "
                                   f"{codec.no_dali_form or 'lossyload has no DALI graph for it'}")
    allowed = FORMS[codec.name].transforms
    for t in transforms:
        if not isinstance(t, allowed):
            raise DaliUnsupportedError(f"augmentation {t!r} has no DALI form for codec {codec.name!r}; DALI forms: "
                                       f"{', '.join(c.__name__ for c in allowed)}")
        if isinstance(t, latent.RandomCrop) and t.padding:
            raise DaliUnsupportedError(f"{t!r}: DALI pads with a constant, not by replicating edge cells; use "
                                       f"padding=0")
    if codec.name == "rgb" and codec.options.backend != "turbo":
        raise DaliUnsupportedError("codec 'rgb' with backend='pil' has no DALI form (DALI decodes like "
                                   "libjpeg-turbo); use the default backend='turbo'")


def member_dtype(codec: Codec) -> Any:
    """The DALI dtype the reader gives the payload member (raw bytes reinterpreted, no copy)."""
    from nvidia.dali import types

    return getattr(types, FORMS[codec.name].member_dtype(codec))


def output(codec: Codec, transforms: list, payload: Any, gpu: bool) -> Any:
    """The graph from the reader's payload to the codec's (single) output tensor."""
    return FORMS[codec.name].graph(codec, transforms, payload, gpu)


def _vae(codec: Codec, transforms: list, payload: Any, gpu: bool) -> Any:
    """Select a view, dequantize (``q * a + b`` with the stored per-channel affine, as ``Vae.decode``), then
    the spatial and noise augmentations (float32 out). Torch applies view choice, posterior sampling
    and noise to the whole ``[views, planes, ...]`` sample before ``finalize`` keeps view 0 / plane 0; they act
    per view and per element, so doing the choice first gives the same output distribution with less work."""
    from nvidia.dali import fn, math as dmath, types

    c = codec.config
    x = fn.reshape(payload, shape=[c.views, c.planes, c.latent_channels, c.grid, c.grid])
    if gpu:
        x = x.gpu()
    view: Any = 0
    left = c.views  # views still to choose from
    for t in transforms:
        if isinstance(t, latent.RandomView) and left > 1:
            view, left = fn.random.uniform(values=list(range(c.views)), dtype=types.INT32), 1
        elif isinstance(t, latent.View):
            if t.index >= left:
                raise DaliUnsupportedError(f"latent_view: view {t.index} asked, {left} available")
            view, left = (t.index if left == c.views else view), 1
    a, b = codec._dequant()  # [1, planes, C, 1, 1]: the same float32 constants the torch path uses
    if c.storage == "float16":  # DALI's arithmetic takes no float16; half -> float is exact
        x = fn.cast(x, dtype=types.FLOAT)
    mean = x[view, 0] * types.Constant(a[0, 0]) + types.Constant(b[0, 0])
    for t in transforms:
        if isinstance(t, latent.PosteriorSample):
            if c.planes < 2:
                raise DaliUnsupportedError("latent_posterior_sample needs the posterior std: shard with --set "
                                           "store_std=true")
            std = dmath.exp(x[view, 1] * types.Constant(a[0, 1]) + types.Constant(b[0, 1]))
            mean = mean + t.temperature * std * fn.random.normal(std)
    y = fn.reshape(mean, layout="CHW")
    h = w = c.grid
    for t in transforms:
        if isinstance(t, latent.HFlip):
            y = fn.flip(y, horizontal=fn.random.coin_flip(probability=t.p), vertical=0)
        elif isinstance(t, (latent.RandomCrop, latent.CenterCrop)):
            s = t.size
            if s > min(h, w):
                raise DaliUnsupportedError(f"{t!r}: size {s} exceeds the latent grid {h}x{w}")
            if isinstance(t, latent.CenterCrop):
                top, left_ = (h - s) // 2, (w - s) // 2
            else:
                top = fn.random.uniform(values=list(range(h - s + 1)), dtype=types.INT32)
                left_ = fn.random.uniform(values=list(range(w - s + 1)), dtype=types.INT32)
            y = y[:, top:top + s, left_:left_ + s]
            h = w = s
        elif isinstance(t, latent.GaussianNoise):
            y = y + t.sigma * fn.random.normal(y)
    return y  # float32: a float16 output is cast by torch (DALI's float->half rounding differs by an ulp)


def _rgb(codec: Codec, transforms: list, payload: Any, gpu: bool) -> Any:
    """DALI's JPEG decoder (libjpeg-turbo on the CPU, nvJPEG with ``mixed``), the crops and flip, then the
    normalization ``(x - 255 mean) * 1 / (255 std)`` with the float32 constants of ``Rgb.finalize``."""
    import torch
    from nvidia.dali import fn, types

    img = fn.decoders.image(payload, device="mixed" if gpu else "cpu", output_type=types.RGB)
    for t in transforms:
        if isinstance(t, rgb.RandomResizedCrop):
            img = fn.random_resized_crop(img, size=[t.size, t.size], random_area=list(t.scale),
                                         random_aspect_ratio=list(t.ratio), antialias=True)
        elif isinstance(t, rgb.ResizeCenterCrop):
            img = fn.resize(img, resize_shorter=round(t.size / t.crop_fraction), antialias=True)
            img = fn.crop(img, crop=[t.size, t.size])
        elif isinstance(t, rgb.HFlip):
            img = fn.flip(img, horizontal=fn.random.coin_flip(probability=t.p), vertical=0)
    o = codec.options
    mean = (torch.tensor(o.mean).view(3, 1, 1) * 255).numpy()
    inv = (1.0 / (torch.tensor(o.std).view(3, 1, 1) * 255)).numpy()
    chw = fn.cast(fn.transpose(img, perm=[2, 0, 1]), dtype=types.FLOAT)
    return (chw - types.Constant(mean.astype(np.float32))) * types.Constant(inv.astype(np.float32))


@dataclass(frozen=True)
class Form:
    """A codec's DALI form: the augmentations it translates, the reader's member dtype (a name in
    ``nvidia.dali.types``) and the graph from the payload to the output tensor."""

    transforms: tuple[type, ...]
    member_dtype: Callable[[Codec], str]
    graph: Callable[[Codec, list, Any, bool], Any]


FORMS = {  # codec name -> its DALI form (a codec without one says why in its no_dali_form)
    "vae": Form(VAE_TRANSFORMS, lambda c: "INT8" if c.config.storage == "int8" else "FLOAT16", _vae),
    "rgb": Form(RGB_TRANSFORMS, lambda c: "UINT8", _rgb),
}


def torch_dtype(codec: Codec) -> Any:
    """The dtype the loader casts the pipeline's float32 output to (torch rounds like numpy, half to even)."""
    import torch

    return torch.float16 if getattr(codec.options, "dtype", "float32") == "float16" else None
