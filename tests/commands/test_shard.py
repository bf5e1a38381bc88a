"""``lossyload-shard`` argument handling: codec config from ``--set`` and the shortcut flags; errors exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossyload.errors import LossyloadError
from lossyload.index import Index
from lossyload.commands.shard import build_parser, config_from_args, main


def config(*argv: str) -> dict:
    return config_from_args(build_parser().parse_args(["src", "dest", *argv]))


def test_config_from_set_and_flags() -> None:
    assert config() == {}
    assert config("--set", "keep=[16,8]", "--set", "storage=coefficients", "--set", "zstd_level=5") == {
        "keep": [16, 8], "storage": "coefficients", "zstd_level": 5}
    assert config("--set", 'storage="jpeg"', "--storage", "coefficients", "--resize", "256", "--quality", "80") == {
        "storage": "coefficients", "resize": 256, "quality": 80}
    assert config("--set", " resize = null") == {"resize": None}
    with pytest.raises(LossyloadError, match="expected KEY=VALUE"):
        config("--set", "storage")


def test_flags_reach_the_index(small_folder: Path, tmp_path: Path) -> None:
    rc = main([str(small_folder), str(tmp_path / "out"), "--storage", "coefficients", "--set", "keep=[8,4]",
               "--quality", "70", "--resize", "32", "--maxcount", "100", "--no-progress"])
    assert rc == 0
    index = Index.from_json((tmp_path / "out" / "index.json").read_text())
    assert index.member == "dct.zst" and index.samples == 12
    assert {k: index.config[k] for k in ("storage", "keep", "quality", "resize")} == {
        "storage": "coefficients", "keep": [8, 4], "quality": 70, "resize": 32}
    assert len(index.shards[0].transcoded) == 12  # every 48x64 source is resized to a short side of 32


@pytest.mark.parametrize("argv, message", [
    (["--set", "qualty=80"], "unknown field(s) ['qualty']"),
    (["--set", "keep=[0,8]"], "keep must be"),
    (["--set", "storage"], "expected KEY=VALUE"),
    (["--maxcount", "0"], "must be positive"),
    (["--codec", "rgb", "--set", "quality=0"], "quality must be in 1..100"),
])
def test_bad_arguments_exit_2(small_folder: Path, tmp_path: Path, capsys, argv: list, message: str) -> None:
    assert main([str(small_folder), str(tmp_path / "out"), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lossyload-shard: error: ") and message in err
    assert not (tmp_path / "out" / "index.json").exists()


def test_unknown_codec_is_an_argparse_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path), str(tmp_path / "out"), "--codec", "webp"])
    assert info.value.code == 2


def test_order_flags() -> None:
    """The seeded shuffled order is the default; --keep-order writes the source's order; --shuffle, the former
    opt-in, is still accepted and means the default."""
    parse = build_parser().parse_args
    assert parse(["src", "dest"]).shuffle and parse(["src", "dest", "--shuffle"]).shuffle
    assert not parse(["src", "dest", "--keep-order"]).shuffle
    with pytest.raises(SystemExit):
        parse(["src", "dest", "--keep-order", "--shuffle"])
