"""Shell completion, Hydra's: `train --shell-completion install=bash` (or zsh, fish) prints the script a shell
evaluates, and with it Tab offers the config's keys and each group's options; `evaluate`, `predict` and
`train-export` are Hydra applications too, and complete their own keys. bash runs the script here, as a user's
shell does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import options
from helpers.commands import run_command

COMMANDS = Path(sys.executable).parent
"""Where the console scripts are installed: the completion script finds the command on the PATH."""
BASH_BINDING = "COMP_WORDBREAKS=$COMP_WORDBREAKS complete -o nospace -o default -F hydra_bash_completion {command}"


@pytest.mark.parametrize("shell, binding", [
    ("bash", BASH_BINDING),
    ("zsh", BASH_BINDING),  # zsh runs bash's script through bashcompinit
    ("fish", "complete -c {command} -x -a '(hydra_fish_completion)'"),
])
def test_each_shell_gets_a_script_that_completes_the_command(tmp_path, shell, binding):
    installed = run_command([str(COMMANDS / "train"), "--shell-completion", f"install={shell}"], tmp_path)

    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.rstrip().splitlines()[-1] == binding.format(command="train")
    assert list(tmp_path.iterdir()) == []  # no run directory, no outputs/


def completed(command_line: str, cwd: Path) -> list[str]:
    """What Tab offers at the end of `command_line` in bash, once the command's completion script is evaluated."""
    command = command_line.split()[0]
    script = (f'eval "$({command} -sc install=bash)"; COMP_LINE="{command_line}"; COMP_POINT=${{#COMP_LINE}}; '
              f'COMP_WORDS=($COMP_LINE); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); hydra_bash_completion; '
              f'printf "%s\\n" "${{COMPREPLY[@]}}"')
    env = {**os.environ, "PATH": f"{COMMANDS}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("command_line, offered", [
    ("train mod", {"model=", "model."}),
    ("train model=", {f"model={option}" for option in options("model")}),
    ("train optimizer.l", {"optimizer.lr="}),
    ("evaluate ckpt", {"ckpt_path="}),
    ("predict inp", {"input="}),
    ("train-export form", {"format="}),
])
def test_tab_in_bash_offers_the_config_s_keys_and_options(tmp_path, command_line, offered):
    assert set(completed(command_line, tmp_path)) == offered
    assert list(tmp_path.iterdir()) == []
