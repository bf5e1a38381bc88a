"""The README's Use block runs as written: its shell commands (shard a class folder, pre-extract coefficients,
shard a Parquet table, inspect, verify) in a folder holding the data they name, then its Python block, with
``s3://bucket`` served by a real S3-compatible server on 127.0.0.1 (credentials and endpoint as the AWS
variables a user would set) and the cache folder moved under the test's folder."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import make_image_folder

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent


def use_blocks() -> tuple[str, str]:
    """The first bash and the first python fenced block of the README's ``## Use`` section."""
    text = README.read_text()
    use = text[text.index("\n## Use\n"):]
    use = use[: use.index("\n## ", 1)]
    bash = re.search(r"```bash\n(.*?)```", use, re.S)
    python = re.search(r"```python\n(.*?)```", use, re.S)
    assert bash and python, "the README's Use section lost its bash or python block"
    return bash.group(1), python.group(1)


def test_the_use_block_names_what_this_test_builds() -> None:
    bash, python = use_blocks()
    assert "data/imagenette/train" in bash and "data/train.parquet" in bash
    assert "s3://bucket/" in python and "/local/cache" in python


def test_the_use_block_runs_as_written(tmp_path: Path, s3_server) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import s3fs

    bash, python = use_blocks()
    make_image_folder(tmp_path / "data" / "imagenette" / "train", {"n01": 40, "n02": 40}, size=(240, 300))
    rng = np.random.default_rng(0)
    images = []
    for i in range(8):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(buf, "JPEG")
        images.append(buf.getvalue())
    pq.write_table(pa.table({"image": images, "label": ["a", "b"] * 4}), tmp_path / "data" / "train.parquet")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for line in bash.strip().splitlines():
        command = line.split("   #")[0].split("  #")[0].strip()
        done = subprocess.run(["bash", "-c", command + " --no-progress" if command.startswith("lossyload-shard")
                               else command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    # the object store the Python block reads: shards/train uploaded as s3://bucket/shards/{train,web}
    s3_server.bucket("bucket")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    for name in ("train", "web"):
        fs.put(str(tmp_path / "shards" / "train"), f"bucket/shards/{name}", recursive=True)
    code = python.replace('"/local/cache"', repr(str(tmp_path / "local" / "cache")))
    code += "\nprint('batches', sum(1 for _ in mixed), len(rgb), type(state).__name__)\n"
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": s3_server.endpoint}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, **aws}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^batches \d+ \d+ dict$", done.stdout, re.M), done.stdout
