"""What a run shows when nobody watches: plain progress lines at a steady interval."""

from __future__ import annotations

import re

from common import runlog


def test_plain_progress_lines_when_output_is_not_a_terminal(monkeypatch, capsys):
    assert not runlog.console.is_terminal  # pytest captures stderr: not a terminal
    monkeypatch.setenv("VIREID_PROGRESS_SECONDS", "0")  # a line at every advance
    with runlog.progress_bar(200, "stage 2 agw", unit="img") as advance:
        advance(64, postfix="epoch 1/2 step 1/3 loss 7.412 acc 0.05")
        advance(64)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stage 2 agw:")]
    assert len(lines) == 3  # two advances and the final line
    assert re.fullmatch(r"stage 2 agw: 64/200 img \(32%\), [\d,.]+ img/s, elapsed 0:00:\d\d, eta [\d:?]+, "
                        r"epoch 1/2 step 1/3 loss 7\.412 acc 0\.05", lines[0]), lines[0]
    assert lines[1].startswith("stage 2 agw: 128/200 img (64%)") and lines[1].endswith("loss 7.412 acc 0.05")
    assert "eta done" in lines[2]


def test_plain_progress_respects_the_interval(monkeypatch, capsys):
    monkeypatch.setenv("VIREID_PROGRESS_SECONDS", "3600")
    with runlog.progress_bar(10, "generating pairs") as advance:
        for _ in range(10):
            advance(1)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("generating pairs:")]
    assert len(lines) == 1 and "10/10 img (100%)" in lines[0]  # only the final line within the hour
    monkeypatch.setenv("VIREID_PROGRESS_SECONDS", "soon")
    assert runlog.progress_interval() == 30.0
