"""Log levels as journal priorities: a `<N>` prefix only on the journal's own stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckeetcd.support.logs import PRIORITIES

SCRIPT = """
from ckeetcd.support import logs
logs.configure("json")
log = logs.get()
log.debug("d"); log.info("i", n=1); log.warning("w"); log.error("e"); log.critical("c")
"""


def run(out: Path, journal: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal is not None:
        env["JOURNAL_STREAM"] = journal
    with open(out, "w") as f:
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=f, env=env, check=True,
                       timeout=60)
    return out.read_text().splitlines()


def test_the_journal_stream_gets_priorities(tmp_path: Path) -> None:
    out = tmp_path / "stream"
    out.touch()
    st = out.stat()
    lines = run(out, f"{st.st_dev}:{st.st_ino}")
    assert [line[:3] for line in lines] == ["<6>", "<4>", "<3>", "<2>"]
    assert [json.loads(line[3:])["event"] for line in lines] == ["i", "w", "e", "c"]


@pytest.mark.parametrize("journal", [None, "", "1:2", "garbage"])
def test_any_other_output_keeps_plain_json_lines(tmp_path: Path, journal: str | None) -> None:
    lines = run(tmp_path / "out", journal)
    assert [json.loads(line)["level"] for line in lines] == ["info", "warning", "error",
                                                             "critical"]


def test_every_level_has_a_priority() -> None:
    assert PRIORITIES["warning"] == 4 and PRIORITIES["error"] == 3 and PRIORITIES["info"] == 6
