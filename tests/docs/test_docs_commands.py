"""Every ```bash block of README.md and docs/*.md (not docs/dev/) runs as written.

So docs and code cannot drift (issue 17 §3). Each file runs in a fresh world: its own
``HOME``, ``MYCELIUM_HOME``, working directory, ``MYCELIUM_PASSPHRASE``; its blocks run in
order, each line in bash, with exported variables and the working directory carried from
line to line (as in one terminal). Conventions a doc may use:

* ``<!-- docs-test: skip (REASON) -->`` on the line before a block: not run, and listed
  (long-running servers, real provider accounts, root, installs from the network).
* ``name$ command``: the command as person *name* types it, in *name*'s own home
  (``ana$``, ``ben$``, ``guardian-a$``, ``new$``). Lines without a prompt run in the
  default home (the reader's, *you*).
* A home gets an identity (``mycelium init --name NAME``) before its first command, as
  the docs assume one, unless that command is ``init`` or ``recover …`` (which need an
  empty home).
* Placeholders, filled with real values: ``did:key:z6Mk<Name>…`` and ``12D3KooW<Name>…``
  are person *Name*'s DID / PeerID (``did:key:z6Mk…`` alone: a neighbour's); ``<code>`` is
  the invite code printed last; ``request.cbor`` the recovery request written last. Any
  other ``<placeholder>`` fails the test: fill it here or mark the block skipped.
* ``.venv/bin/`` is this test's virtualenv; ``mycelium`` alone is found on ``PATH``.
* ``MYCELIUM_INSECURE_FAST_KDF=1`` keeps keystore creation fast; nothing else differs from
  what a reader's terminal does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
PROMPT = re.compile(r"^(?P<who>[a-z][a-z0-9-]*)\$ (?P<cmd>.*)$")
DID_OF = re.compile(r"did:key:z6Mk(?P<who>[A-Za-z-]*)…")
PEER_OF = re.compile(r"12D3KooW(?P<who>[A-Za-z-]*)…")
ANGLE = re.compile(r"<(?P<name>[A-Za-z][A-Za-z0-9 _.-]*)>")
REQUEST_WRITTEN = re.compile(r"recovery request written to (?P<path>\S+)")
NEEDS_EMPTY_HOME = re.compile(r"\bmycelium\s+(init|recover)\b")
COMMAND_TIMEOUT = 120


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    text: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The ```bash blocks of one Markdown file, with their skip reason if marked."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            start = i
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            marker = SKIP.match(before.strip())
            out.append(Block(path, start + 1, "\n".join(body),
                             marker.group("reason").strip() if marker else None))
        i += 1
    return out


def logical_lines(text: str) -> list[str]:
    """Commands of a block: continuation lines joined, blanks and comment lines dropped."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def split_comment(line: str) -> tuple[str, str]:
    """``(command, comment)``: the comment starts at the first unquoted ``#`` after a space."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i > 0 and line[i - 1] in " \t":
            return line[:i].rstrip(), line[i:]
    return line, ""


def key(who: str) -> str:
    """``Guardian-A`` / ``guardian-a`` / ``GuardianA`` -> ``guardiana``."""
    return re.sub(r"[^a-z0-9]", "", who.lower())


@dataclass
class World:
    """One doc file's fresh machine: homes of the people in it, files, shell state."""

    root: Path
    homes: Path = field(init=False)
    cwd: Path = field(init=False)
    state: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    facts: dict[str, str] = field(default_factory=dict)
    ids: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.homes = self.root / "homes"
        self.cwd = self.root / "work"
        self.cwd.mkdir(parents=True)
        (self.root / "user").mkdir()
        self.state = self.root / "shell-state.sh"
        self.env = {
            "HOME": str(self.root / "user"),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LANG": "C.UTF-8",
            "MYCELIUM_HOME": str(self.home("you")),
            "MYCELIUM_PASSPHRASE": "docs-test passphrase",
            "MYCELIUM_INSECURE_FAST_KDF": "1",
            "CI": os.environ.get("CI", ""),
        }
        self.state.write_text(f"cd {shlex.quote(str(self.cwd))}\n")

    def home(self, who: str) -> Path:
        return self.homes / key(who)

    def identity(self, who: str) -> dict[str, str]:
        """Person ``who``'s DID and PeerID (their home gets an identity if it has none)."""
        k = key(who) or "neighbour"
        if k not in self.ids:
            home = self.home(k)
            if not (home / "keystore.json").exists():
                self._mycelium("init", "--name", who or "Neighbour", "--home", str(home))
            out = self._mycelium("id", "--json", "--home", str(home))
            self.ids[k] = json.loads(out)
        return self.ids[k]

    def _mycelium(self, *args: str) -> str:
        proc = subprocess.run([str(VENV_BIN / "mycelium"), *args], env=self.env, text=True,
                              capture_output=True, timeout=COMMAND_TIMEOUT, cwd=self.cwd)
        assert proc.returncode == 0, f"mycelium {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def fill(self, command: str, where: str) -> str:
        """Placeholders of one command replaced by real values (see module docstring)."""
        command = command.replace(".venv/bin/", f"{VENV_BIN}/")
        command = DID_OF.sub(lambda m: self.identity(m.group("who"))["did"], command)
        command = PEER_OF.sub(lambda m: self.identity(m.group("who"))["peer_id"], command)
        for name, fact in (("<code>", "code"),):
            if name in command:
                assert fact in self.facts, f"{where}: {name} before any command printed one"
                command = command.replace(name, shlex.quote(self.facts[fact]))
        if re.search(r"(?<![\w./-])request\.cbor\b", command):
            assert "request" in self.facts, f"{where}: request.cbor before `recover start`"
            command = re.sub(r"(?<![\w./-])request\.cbor\b", self.facts["request"], command)
        unknown = ANGLE.search(command)
        assert unknown is None, (f"{where}: unknown placeholder {unknown.group(0)}: fill it in "
                                 "tests/docs/test_docs_commands.py or mark the block "
                                 "<!-- docs-test: skip (REASON) -->")
        return command

    def run(self, line: str, where: str) -> subprocess.CompletedProcess[str]:
        command, _comment = split_comment(line)
        prompt = PROMPT.match(command)
        who = prompt.group("who") if prompt else None
        if prompt:
            command = prompt.group("cmd")
        command = self.fill(command, where)
        init = "" if NEEDS_EMPTY_HOME.search(command) else (
            'if [ ! -e "$MYCELIUM_HOME/keystore.json" ]; then '
            f'mycelium init --name {shlex.quote((who or "you").title())} >/dev/null || exit 97; '
            "fi\n")
        state = shlex.quote(str(self.state))
        body = f"{init}{command}\n"
        if who is not None:  # a person's own terminal: their home, nothing carried back
            home = shlex.quote(str(self.home(who)))
            body = f"(\nexport MYCELIUM_HOME={home}\n{body})\n"
        script = (f"set -o pipefail\nsource {state}\n{body}"
                  f'rc=$?\n{{ export -p; echo "cd $(printf %q "$PWD")"; }} > {state}\nexit $rc\n')
        proc = subprocess.run(["bash", "-c", script], env=self.env, text=True,
                              capture_output=True, timeout=COMMAND_TIMEOUT, cwd=self.cwd)
        assert proc.returncode == 0, (
            f"{where}: `{line}` failed with exit {proc.returncode}\n"
            f"ran: {command}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
        self._remember(command, proc.stdout)
        return proc

    def _remember(self, command: str, stdout: str) -> None:
        if re.search(r"\bspace\s+invite\b", command) and "--json" not in command:
            lines = [x for x in stdout.splitlines() if x.strip()]
            if lines:
                self.facts["code"] = lines[-1].strip()
        found = REQUEST_WRITTEN.search(stdout)
        if found:
            self.facts["request"] = found.group("path")


ALL_BLOCKS = [(p, b) for p in doc_files() for b in blocks(p)]


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in doc_files() if blocks(p)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_blocks_run_as_written(path: Path, tmp_path: Path) -> None:
    world = World(tmp_path)
    ran = 0
    for block in blocks(path):
        if block.skip is not None:
            continue
        for n, line in enumerate(logical_lines(block.text)):
            world.run(line, f"{block.where} (command {n + 1})")
            ran += 1
    skipped = [b for b in blocks(path) if b.skip is not None]
    print(f"{path.relative_to(ROOT)}: ran {ran} commands; skipped blocks: "
          + ("; ".join(f"{b.where} ({b.skip})" for b in skipped) or "none"))


def test_every_skip_has_a_reason_and_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    """The list of what the docs test does not run, printed for the report; a marker with
    an empty reason, or a marker not followed by a block, fails."""
    skipped = [b for _, b in ALL_BLOCKS if b.skip is not None]
    for block in skipped:
        assert len(block.skip or "") >= 3, f"{block.where}: skip without a reason"
    for path in doc_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if SKIP.match(line.strip()):
                after = next((x for x in lines[i + 1:] if x.strip()), "")
                assert after.strip() == "```bash", (
                    f"{path.relative_to(ROOT)}:{i + 1}: skip marker not followed by a ```bash "
                    "block")
    with capsys.disabled():
        print("\ndocs-test skipped blocks:\n" + "\n".join(
            f"  {b.where}: {b.skip}" for b in skipped))


def test_shell_blocks_are_marked_bash() -> None:
    """A shell block fenced as ``sh``, ``shell`` or ``console`` would escape this test."""
    fences = re.compile(r"^```(sh|shell|console|zsh)\s*$")
    for path in doc_files():
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            assert not fences.match(line.strip()), (
                f"{path.relative_to(ROOT)}:{i + 1}: fence shell commands as ```bash so the "
                "docs test runs them (or mark them skipped)")


def test_the_user_docs_have_runnable_blocks() -> None:
    """Guard against a vacuous pass: the docs that teach commands keep running some."""
    for name in ("README.md", "docs/quickstart.md", "docs/recovery.md"):
        runnable = [b for b in blocks(ROOT / name) if b.skip is None]
        assert runnable, f"{name}: no runnable ```bash block left"


def test_parsing_conventions(tmp_path: Path) -> None:
    """The helpers this test rests on."""
    assert split_comment("""a '{"x":"#1"}'   # note""") == ("""a '{"x":"#1"}'""", "# note")
    assert logical_lines("# c\nfoo \\\n  --bar\n\nbaz") == ["foo    --bar", "baz"]
    assert key("Guardian-A") == key("guardian-a") == key("GuardianA") == "guardiana"
    probe = tmp_path / "probe.md"
    probe.write_text("intro\n<!-- docs-test: skip (long-running node) -->\n```bash\n"
                     "mycelium run\n```\n\n```bash\nmycelium id\n```\n")
    first, second = blocks(probe)
    assert first.skip == "long-running node" and first.text == "mycelium run"
    assert second.skip is None and second.text == "mycelium id"
