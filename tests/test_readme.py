"""README.md's promises: its Python example runs, and its commands are the ones CI and users run."""
import re
import subprocess
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()


def command_after(marker):
    """The command in the fenced block right after <!-- marker --> (what .ci/run reads too)."""
    block = README.split(f"<!-- {marker} -->", 1)[1]
    return block.split("```", 2)[1].strip()


def test_python_example_runs(real_fashion_mnist_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)                    # no ./data here: the loader must find the system copy
    example = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    exec(compile(example, "README.md example", "exec"), {})


def test_ci_runs_the_readme_test_command():
    script = Path(__file__).parent.parent / ".ci" / "run"
    extracted = subprocess.run(["sed", "-n", "/<!-- test-command -->/{n;n;p;}", "README.md"],
                               cwd=script.parent.parent, capture_output=True, text=True, check=True).stdout
    assert extracted.strip() == command_after("test-command")
    assert "pytest" in extracted and "torch==2.13.0" in extracted


def test_main_command_is_a_real_subcommand():
    from numpyvae import cli
    command = command_after("main-command")
    assert "pip install" in command
    args = command.split("&&")[1].split()
    assert args[0] == "numpyvae"
    cli.build_parser().parse_args(args[1:])        # raises SystemExit on an unknown command or flag
