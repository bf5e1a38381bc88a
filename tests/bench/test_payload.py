"""lossyload.bench.payload: the codec member's mean size over a shard set, without the tar container."""

from __future__ import annotations

from pathlib import Path

from lossyload.bench.payload import payload_bytes
from lossyload.fs import read_index
from lossyload.shard import ShardJob, run_job
from tests.conftest import make_image_folder, read_tar


def test_mean_payload_is_the_members_mean_size(tmp_path: Path) -> None:
    src = make_image_folder(tmp_path / "src", {"a": 5, "b": 4})
    out = tmp_path / "shards"
    run_job(ShardJob(src=str(src), dest=str(out), codec="rgb", maxcount=4, progress=False))
    member = read_index(str(out))[1].member
    sizes = [len(data) for tar in sorted(out.glob("*.tar")) for name, data in read_tar(tar)
             if name.endswith("." + member)]
    assert len(sizes) == 9
    assert payload_bytes(str(out)) == sum(sizes) / 9
    assert payload_bytes(str(out)) < sum(tar.stat().st_size for tar in out.glob("*.tar")) / 9
