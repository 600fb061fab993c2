"""Long set-up steps say one line, keep their noise in a log, and show its end when they fail."""

from __future__ import annotations

import sys

from bench.serve import quiet


def test_a_step_says_one_line_and_keeps_its_output_in_the_log(tmp_path, capsys):
    noisy = [sys.executable, "-c", "print('ERROR: pip dependency resolver says nothing useful\\n' * 40)"]
    log = tmp_path / "install.log"
    assert quiet.main(["--what", "installing x", "--about", "a minute", "--log", str(log), "--", *noisy]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"installing x (usually a minute); its output goes to {log}"
    assert "resolver" not in err and err.count("\n") == 2 and "done in" in err
    assert log.read_text().count("resolver") == 40


def test_a_failed_step_shows_the_end_of_its_log_and_exits_2(tmp_path, capsys):
    failing = [sys.executable, "-c", "import sys; print('\\n'.join(f'line {i}' for i in range(50))); sys.exit(3)"]
    log = tmp_path / "install.log"
    assert quiet.main(["--what", "installing y", "--about", "a minute", "--log", str(log), "--", *failing]) == 2
    err = capsys.readouterr().err
    assert "  | line 49" in err and "  | line 29" not in err  # the last 20 lines
    assert err.strip().splitlines()[-1].startswith("python -m bench.serve.quiet: installing y failed (exit 3)")
    assert "Traceback" not in err
