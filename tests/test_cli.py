"""Every command reports a user error the same way: one line `NAME: message` on stderr, exit code
cli.USER_ERROR_EXIT, no traceback (dfd.cli.run), whether absl refuses a flag or main raises a ValueError.

The commands start together in one fixture: most fail before TensorFlow loads (a flag error, or a
ValueError raised before any import of it), so the whole module costs about three TensorFlow start-ups
(dfd.train, dfd.tune and dfd.evaluate import it at module level).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dfd import cli

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"

# id -> (command line after the interpreter, the name it reports as, a part of the message)
CASES = {
    "train": (["-m", "dfd.train"], "dfd.train", "--data is required"),
    "tune": (["-m", "dfd.tune"], "dfd.tune", "--data is required"),
    "evaluate": (["-m", "dfd.evaluate", "--split=test"], "dfd.evaluate", "--run_dir must have a value"),
    "predict": (["-m", "dfd.predict", "--model=run", "--format=xml", "clip.mp4"], "dfd.predict", "--format"),
    "export": (["-m", "dfd.export", "--run_dir=run"], "dfd.export", "--output must have a value"),
    "serve": (["-m", "dfd.serve", "--model=run", "--port=http"], "dfd.serve", "--port=http"),
    "serve_limit": (["-m", "dfd.serve", "--model=run", "--max_upload_mb=-5"], "dfd.serve", "--max_upload_mb=-5 must"),
    "data_service": (["-m", "dfd.data_service", "janitor"], "dfd.data_service", "usage: python -m dfd.data_service"),
    "bench": (["-m", "dfd.bench", "nosuch"], "dfd.bench", "unknown benchmark 'nosuch'; choose one of: convert"),
    "bench_flags": (["-m", "dfd.bench", "models", "--steps=many"], "dfd.bench", "--steps=many"),
    "make_tfrecords": ([str(TOOLS / "make_tfrecords.py"), "--source=src", "--output=out", "--workers=all"],
                       "make_tfrecords", "--workers=all"),
    "make_sample_data": ([str(TOOLS / "make_sample_data.py"), "--output=sample", "--val_fraction=0.6",
                          "--test_fraction=0.6"], "make_sample_data", "sum to less than 1"),
    "make_sbi_figure": ([str(TOOLS / "make_sbi_figure.py"), "--num_fakes=0"], "make_sbi_figure", "--num_fakes=0"),
    # A --work holding someone's file is refused before anything runs (the tool deletes --work).
    "make_trust_figures": ([str(TOOLS / "make_trust_figures.py"), "--work=."], "make_trust_figures",
                           "holds files this tool did not write (notes.txt)"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    (work / "notes.txt").write_text("not the tool's")
    env = {**{k: v for k, v in os.environ.items() if k != cli.SHOW_LOGS_ENV}, "PYTHONPATH": str(ROOT)}
    processes = {case: subprocess.Popen([sys.executable, *argv], cwd=work, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                 for case, (argv, _, _) in CASES.items()}
    done = {case: (*process.communicate(timeout=300), process.returncode) for case, process in processes.items()}
    assert sorted(path.name for path in work.iterdir()) == ["notes.txt"]   # no command wrote anything
    return done


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_value_is_one_line_and_exit_code_2(results, case):
    _, name, message = CASES[case]
    _, stderr, code = results[case]
    assert code == cli.USER_ERROR_EXIT, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: ") and message in lines[0], stderr
