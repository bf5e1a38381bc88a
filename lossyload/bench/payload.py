"""The codec payload's share of a shard set: the stored representation without the tar container."""

from __future__ import annotations

from ..fs import join, open_url, read_index
from ..loader import tario


def payload_bytes(url: str) -> float:
    """Mean size of the codec member (the representation without tar headers) over every shard of ``url``."""
    root, index = read_index(url)
    total = count = 0
    for shard in index.shards:
        with open_url(join(root, shard.url), "rb") as f:
            for sample in tario.samples(f, shard.url):
                member = sample.get(index.member)
                if isinstance(member, bytes):
                    total, count = total + len(member), count + 1
    return total / max(count, 1)
