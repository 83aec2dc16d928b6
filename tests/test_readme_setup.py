"""The README's set-up from an empty directory, run exactly as written (bash, the
installed ``mailer`` on the PATH, nothing else), and what it must leave behind."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Setting up from an empty directory"


def setup_block() -> str:
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, "the README lost its set-up section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the set-up section has one shell block"
    return str(blocks[0])


def test_the_readme_set_up_works_when_followed_to_the_letter(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    folder = tmp_path / "newsletter"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        [bash, "-e", "-u", "-o", "pipefail", "-c", setup_block()],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    # What a person reads: no log lines mixed in, on either stream.
    for line in (done.stdout + done.stderr).splitlines():
        assert not line.startswith('{"ts"'), line
        assert "\x1b[" not in line, repr(line)
    assert "edition 1 is sent: 2 sent" in done.stdout
    assert re.search(r"https://news\.example\.org/signin/link/\S+", done.stdout)
    assert (folder / "mailer.toml").stat().st_mode & 0o077 == 0
    sent = sorted((folder / "outbox" / "edition-1").glob("*.eml"))
    readers = set()
    for path in sent:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        readers.add(str(message["To"]))
        assert message["Subject"] == "The harbour reopens after a week of storms"
        assert str(message["List-Unsubscribe"]).startswith("<https://news.example.org/u/")
    assert readers == {"Ada Lovelace <ada@example.org>", "Grace Hopper <grace@example.org>"}
