"""Long commands show progress: a bar on a terminal, plain lines otherwise (never patient data)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).parent / "ccm-connector"


def many_messages(n: int) -> bytes:
    lines = []
    for i in range(n):
        lines.append(
            f"MSH|^~\\&|EHR|CLINIC|CCM|PRACTICE|20261103101500-0600||ADT^A04^ADT_A01|P{i:05d}|P|2.5.1\r"
            f"EVN|A04|20261103101500-0600\rPID|1||MRN{i}^^^CLINIC^MR||PATIENT{i}^TEST||19500101|F\r"
        )
    return "".join(lines).encode()


def test_ingest_prints_plain_progress_lines_when_not_on_a_terminal(local_instance: Path, tmp_path: Path) -> None:
    feed = tmp_path / "feed.hl7"
    feed.write_bytes(many_messages(50))
    out = subprocess.run([str(CLI), "--config", str(local_instance / "connector.toml"), "ingest", str(feed)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plain = [line for line in out.stderr.splitlines() if line.startswith("ingest")]
    assert plain and plain[-1].endswith("50/50") and "\r" not in out.stderr
    assert not any("PATIENT" in line for line in out.stderr.splitlines())


def test_ingest_draws_a_bar_on_a_terminal(local_instance: Path, tmp_path: Path) -> None:
    feed = tmp_path / "feed.hl7"
    feed.write_bytes(many_messages(30))
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([str(CLI), "--config", str(local_instance / "connector.toml"), "ingest", str(feed)],
                            stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=120) == 0
    os.close(controller)
    assert b"\r" in seen and b"[" in seen and b"30/30" in seen
