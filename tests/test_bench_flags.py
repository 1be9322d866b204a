"""Every benchmark parses its flags one way (dfd.bench.parse: its Settings on a FlagValues of its own), and
writes its data through dfd.bench.work_folder."""

import importlib
import os
import subprocess
import sys

import pytest
from absl import flags

from dfd import bench, settings
from dfd.bench import __main__ as dispatcher
from dfd.bench import frames


def test_parse_twice_in_one_process_gives_each_its_own_values():
    first = bench.parse(frames.Settings, ["dfd.bench frames", "--num_clips=8", "--shapes=4x32"])
    second = bench.parse(frames.Settings, ["dfd.bench frames"])
    assert (first.num_clips, list(first.shapes)) == (8, ["4x32"])
    assert second == frames.Settings(shapes=["16x64", "32x128", "32x224"])   # the declared defaults
    assert "num_clips" not in flags.FLAGS   # absl's global flags are left alone
    with pytest.raises(flags.Error, match="num_clips"):
        bench.parse(frames.Settings, ["dfd.bench frames", "--num_clips=many"])


@pytest.mark.parametrize("name", dispatcher._available())
def test_help_lists_every_flag_of_the_benchmark(name, capsys):
    module = importlib.import_module(f"dfd.bench.{name}")
    with pytest.raises(SystemExit) as exit_info:
        bench.parse(module.Settings, [f"dfd.bench {name}", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m dfd.bench {name} [--flags]")
    assert module.__doc__.strip().splitlines()[0] in out
    names = [flag.name for flag in settings.settings_flags(module.Settings)]
    assert names and all(f"  --{flag_name}:" in out or f"  --[no]{flag_name}:" in out for flag_name in names), out
    assert not hasattr(module, "define_flags")   # the Settings dataclass is the one declaration


def test_work_folder_removes_a_temporary_folder_even_on_error_and_keeps_a_given_one(tmp_path):
    with pytest.raises(RuntimeError):
        with bench.work_folder(None, "test") as root:
            (root / "data").write_text("x")
            raise RuntimeError("a benchmark failed")
    assert root.name.startswith("dfd-bench-test-") and not root.exists()
    with bench.work_folder(str(tmp_path / "kept"), "test") as root:
        root.mkdir()
        (root / "data").write_text("x")
    assert (tmp_path / "kept" / "data").exists()


def test_bench_models_takes_a_list_of_backends_through_the_command_line():
    # dfd.bench models' --backend=tensorflow,torch is the benchmark's own flag (one process per backend): the
    # command line must reach it, not stop at dfd.cli's process-wide backend selection.
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("KERAS_BACKEND", None)
    done = subprocess.run([sys.executable, "-m", "dfd.bench", "models", "--backend=tensorflow,torch", "--help"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--backend:" in done.stdout
