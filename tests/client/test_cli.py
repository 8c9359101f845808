"""`framecast stream` / `framecast videos` argument handling and user errors (no server needed)."""

import pytest

from client.cli import build_parser, main
from client.stream_cli import PromptSwitch
from tests.server_harness import free_port


def test_stream_arguments():
    args = build_parser().parse_args(
        ["stream", "a red ball", "--seconds", "4", "-o", "x.mp4", "--switch", "2.5:a blue: square",
         "--switch", "1:green", "--format", "fmp4", "--seed", "3"]
    )
    assert args.prompt == "a red ball" and args.seconds == 4 and str(args.output) == "x.mp4"
    assert args.switch == [PromptSwitch(2.5, "a blue: square"), PromptSwitch(1.0, "green")]
    assert (args.format, args.seed) == ("fmp4", 3)


@pytest.mark.parametrize("argv", [
    ["stream", "p", "--switch", "soon:blue"],
    ["stream", "p", "--switch", "2"],
    ["stream", "p", "--seconds", "-1"],
    ["stream", "p", "--format", "gif"],
    ["videos", "frobnicate"],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_switch_after_the_end_is_a_one_line_error(capsys):
    assert main(["stream", "p", "--seconds", "2", "--switch", "3:blue"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("framecast: error:") and "\n" not in err and "3s" in err


def test_a_cut_with_a_blend_is_a_one_line_error(capsys):
    assert main(["stream", "p", "--seconds", "2", "--switch", "1:blue", "--cut", "--transition-chunks", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("framecast: error:") and "--cut" in err


def test_unreachable_server_is_a_one_line_error(capsys, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["stream", "p", "--seconds", "1", "--url", url, "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 2
    assert main(["videos", "get", "abc", "--url", url]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("framecast: error:") for line in lines)


def test_missing_image_is_reported(capsys, tmp_path):
    assert main(["videos", "create", "p", "--image", str(tmp_path / "nope.png")]) == 2
    assert "image not found" in capsys.readouterr().err


def test_avatar_needs_its_files(capsys, tmp_path):
    (tmp_path / "face.png").write_bytes(b"png")
    assert main(["avatar", "--image", str(tmp_path / "face.png"), "--audio", str(tmp_path / "nope.wav"),
                 "-o", str(tmp_path / "o.mp4")]) == 2
    assert "audio not found" in capsys.readouterr().err
