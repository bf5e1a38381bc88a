"""``lossyload inspect``: what it prints for a shard set, ``--sample``, and errors as exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossyload.cli import main
from lossyload.codecs import create_codec
from lossyload.shard import ShardJob, run_job

from .conftest import make_image_folder, write


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    src = make_image_folder(root / "src", {"cat": 4, "dog": 3}, size=(40, 56))
    write(src / "dog" / "broken.jpg", b"nope")
    out = {}
    for name, config in [("jpeg", {}), ("coef", {"storage": "coefficients", "keep": [16, 8]})]:
        run_job(ShardJob(src=str(src), dest=str(root / name), config=config, maxcount=3, progress=False))
        out[name] = root / name
    return out


def inspect(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["inspect", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_inspect_describes_the_index(datasets, capsys) -> None:
    rc, out, err = inspect(capsys, str(datasets["jpeg"]))
    assert rc == 0 and err == ""
    assert f"{datasets['jpeg']}: lossyload index v1" in out
    assert "codec     jpeg-dct {'storage': 'jpeg'" in out
    assert "member    .jpg + .cls" in out
    assert "samples   7 in 3 shards" in out
    assert "labels    2: cat, dog" in out
    assert "transcoded 0, skipped at shard time 1" in out
    assert "output    y: int16[64x28x28]" in out
    assert "output    cbcr: int16[128x14x14]" in out
    spec = create_codec("jpeg-dct").output_spec()
    assert [line for line in out.splitlines() if line.startswith("  output")] == [
        f"  output    {k}: {s.describe()}" for k, s in spec.items()]
    assert "sample " not in out


def test_inspect_coefficient_storage_shows_the_stored_keep(datasets, capsys) -> None:
    rc, out, _ = inspect(capsys, str(datasets["coef"] / "index.json"))
    assert rc == 0
    assert "'storage': 'coefficients'" in out and "'keep': [16, 8]" in out
    assert "member    .dct.zst + .cls" in out
    assert "output    y: int16[16x28x28]" in out and "output    cbcr: int16[16x14x14]" in out


@pytest.mark.parametrize("which, ky, kc", [("jpeg", 64, 128), ("coef", 16, 16)])
def test_inspect_sample_decodes_one(datasets, capsys, which: str, ky: int, kc: int) -> None:
    rc, out, err = inspect(capsys, str(datasets[which]), "--sample")
    assert rc == 0, err
    lines = [line for line in out.splitlines() if line.startswith("  sample ")]
    assert len(lines) == 3
    assert f"sample    y: ({ky}, 28, 28) torch.int16" in lines[0]
    assert f"sample    cbcr: ({kc}, 14, 14) torch.int16" in lines[1]
    qt = create_codec("jpeg-dct").output_spec()["qt"]
    assert f"sample    qt: (3, 64) torch.{qt.dtype}" in lines[2]
    assert all("label 0 (cat)" in line for line in lines)  # unshuffled: the first sample is cat/img_000


def test_inspect_sample_of_an_empty_dataset_exits_2(tmp_path: Path, capsys) -> None:
    write(tmp_path / "src" / "a" / "notes.txt", b"not an image")
    run_job(ShardJob(src=str(tmp_path / "src"), dest=str(tmp_path / "out"), progress=False))
    rc, out, _ = inspect(capsys, str(tmp_path / "out"))
    assert rc == 0 and "samples   0 in 0 shards" in out and "skipped at shard time 1" in out
    rc, _, err = inspect(capsys, str(tmp_path / "out"), "--sample")
    assert rc == 2 and "no samples" in err


def test_inspect_without_index_exits_2(tmp_path: Path, capsys) -> None:
    rc, out, err = inspect(capsys, str(tmp_path))
    assert rc == 2 and out == ""
    assert err.startswith("lossyload inspect: error: ")
    assert f"{tmp_path}/index.json: no index.json" in err


def test_inspect_bad_index_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "index.json").write_text(json.dumps({"version": 99}))
    rc, _, err = inspect(capsys, str(tmp_path))
    assert rc == 2 and f"{tmp_path}/index.json: unsupported index version 99" in err
    (tmp_path / "index.json").write_text("{")
    rc, _, err = inspect(capsys, str(tmp_path))
    assert rc == 2 and "not valid JSON" in err


def test_inspect_refuses_pipe_urls(capsys) -> None:
    rc, _, err = inspect(capsys, "pipe:echo hi")
    assert rc == 2 and "'pipe:' URLs are refused" in err


def test_inspect_needs_a_url(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["inspect"])
    assert info.value.code == 2


def test_inspect_a_bucket_with_storage_options(datasets, s3_server, bucket_name, capsys) -> None:
    import fsspec

    url = s3_server.bucket(bucket_name) + "/jpeg"
    fsspec.filesystem("s3", **s3_server.storage_options).put(str(datasets["jpeg"]) + "/", url, recursive=True)
    opts = [f"--storage-option={k}={json.dumps(v) if isinstance(v, dict) else v}"
            for k, v in s3_server.storage_options.items()]
    rc, out, err = inspect(capsys, url, "--sample", *opts)
    assert rc == 0, err
    _, local, _ = inspect(capsys, str(datasets["jpeg"]), "--sample")
    assert out.split("\n", 1)[1] == local.split("\n", 1)[1]  # all but the first line, which names the root
    rc, _, err = inspect(capsys, url + "-missing", *opts)
    assert rc == 2 and f"{url}-missing/index.json" in err


TORCH_PROBE = """
import sys
from lossyload.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:  # --help
    rc = exc.code
print("torch" in sys.modules, rc)
"""


@pytest.mark.parametrize("args", [["--help"], ["inspect", "--help"], ["inspect", "{jpeg}"], ["verify", "{coef}"],
                                  ["make-photos", "--help"], ["make-keywords", "--help"], ["preview", "--help"]])
def test_light_subcommands_do_not_import_torch(datasets, args: list[str]) -> None:
    import subprocess
    import sys

    argv = [a.format(**{k: str(v) for k, v in datasets.items()}) for a in args]
    done = subprocess.run([sys.executable, "-c", TORCH_PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-2:] == ["False", "0"], (args, done.stdout[-500:], done.stderr[-500:])


def test_the_demo_subcommand_reaches_the_lab(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # as argparse wraps it
    assert "--preset {demo,full,mobilenet,quick}" in out and "(default demo)" in out and "runs/demo" in out


def test_train_defaults_to_the_demo_preset_and_says_what_each_takes(capsys) -> None:
    """Before: ``lossyload-train`` with no flags ran the full preset (hours on 2 cores)."""
    from lossyload.lab.cli import main as train_main
    from lossyload.lab.presets import PRESETS

    with pytest.raises(SystemExit):
        train_main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default demo)" in out
    for name, p in PRESETS.items():
        assert f"{name}: {' '.join(p.about.split())}" in out
    assert "about 3 h on 2 CPU cores" in out and "about a minute" in out and "about 10 minutes" in out
