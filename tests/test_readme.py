"""The README's quickstart and CI stay in sync."""

from __future__ import annotations

import re

from conftest import ROOT


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick, flags=re.S)


def test_quickstart_is_two_commands_and_ci_runs_the_test_one() -> None:
    cmds = _commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    assert "pytest" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1] in ci.splitlines()


def test_quickstart_main_job_uses_bundled_files() -> None:
    main_cmd = _commands()[0]
    for path in re.findall(r"fixtures/\S+", main_cmd):
        assert (ROOT / path).exists(), path
