"""README's promises: the API example runs as printed, and the quick-start commands match CI."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_api_example_runs_and_prints_what_readme_says():
    example = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    out = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    for printed, claimed in zip(out.stdout.splitlines(),
                                re.findall(r"# (\S.*->.*)$", example, re.M), strict=True):
        assert printed.strip() == claimed.strip()


def test_ci_runs_the_readme_commands():
    commands = re.findall(r"```bash\n(.*?)```", README, re.S)[:2]
    assert "python -m experiments.run +exp=combustion" in commands[0]
    test_cmd = commands[1].strip().split("&&")
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd[-2].strip() in ci and test_cmd[-1].strip() in ci


def test_reduce_your_own_model_example_prints_what_readme_says():
    section = README.split("### Reduce your own model", 1)[1]
    example, printed = re.findall(r"```(?:python|text)\n(.*?)```", section, re.S)[:2]
    out = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == printed.strip()
