"""docs/deploy.md, "Install start-all before it is on your index": from a fresh directory and
a fresh virtualenv, a wheel built from the repository next to requirements.txt, then a git
URL line; the installed `start-all` command works from there. (About 50 s: it installs
start-all's dependencies from the package index, as a user's build does.)"""

from __future__ import annotations

import json
import subprocess
import sys
import venv

from tests.conftest import ROOT


def run(*args: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_wheel_next_to_requirements_then_a_git_url(tmp_path):
    fresh = tmp_path / "myapp"
    fresh.mkdir()
    # 1. the wheel, built from a checkout of the repository (the docs' command)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(fresh),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (fresh / "requirements.txt").write_text("start-all\n")
    venv.create(fresh / ".venv", with_pip=True)
    pip = [str(fresh / ".venv" / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    run(*pip, "install", "-q", "--find-links", ".", "-r", "requirements.txt", cwd=fresh)
    start_all = str(fresh / ".venv" / "bin" / "start-all")
    assert "schedules" in run(start_all, "--help", cwd=fresh).stdout
    init = run(start_all, "init", "fastapi-native", ".", cwd=fresh)
    assert "wrote Procfile" in init.stdout.replace(str(fresh) + "/", "")

    # 2. a git URL line instead (git+https://HOST/OWNER/start-all@REF in real life; the
    #    repository here is local, so git+file://localhost/PATH)
    (fresh / "requirements.txt").write_text(f"start-all @ git+file://localhost{ROOT}\n")
    run(*pip, "install", "-q", "--no-deps", "--force-reinstall", "-r", "requirements.txt",
        cwd=fresh)
    site = next((fresh / ".venv" / "lib").glob("python3*/site-packages"))
    direct = json.loads(next(site.glob("start_all-*.dist-info/direct_url.json")).read_text())
    assert direct["vcs_info"]["vcs"] == "git" and direct["url"].endswith(str(ROOT))
    assert run(start_all, "--version", cwd=fresh).stdout.strip()
