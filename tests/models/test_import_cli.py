"""`framecast import` (models/import_cli.py) end to end over the diffusers base of test_importer.py: the
options that test_import_diffusers_base.py leaves out (--dtype fp16, --fps, --name) reach the model
directory, and the command says where it wrote and how to serve it."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from client.cli import main
from models.config import StreamConfig
from tests.models.test_importer import base  # noqa: F401  (a fixture: the diffusers Wan folder)


def test_import_command_writes_the_options_it_was_given(base, tmp_path, capsys):  # noqa: F811
    folder, transformer, _ = base
    out = tmp_path / "causvid-tiny"
    assert main(["import", str(folder), "-o", str(out), "--family", "causvid", "--dtype", "fp16", "--fps", "8",
                 "--name", "my-model"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (causvid, fp16) in " in printed and printed.rstrip().endswith(f"framecast serve --model {out}")
    cfg = json.loads((out / "framecast.json").read_text())
    assert (cfg["name"], cfg["family"]) == ("my-model", "causvid")
    defaults = StreamConfig()
    assert (cfg["stream"]["fps"], cfg["stream"]["width"], cfg["stream"]["height"]) == (8, defaults.width, defaults.height)
    stored = load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    expected = transformer.state_dict()
    assert set(stored) == set(expected)
    assert all(stored[k].dtype == torch.float16 and torch.equal(stored[k], v.half()) for k, v in expected.items())
