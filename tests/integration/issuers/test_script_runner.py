"""ScriptRunner against real worker processes (DESIGN §2, "Scripts run in a separate
worker process"): isolation, timeouts, failures, bounded and scrubbed output.

No database. Every fault test ends by checking that the same runner still serves a
good call from the same worker process: a script's fault must never cost the pool.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpilot.issuers.runner import ScriptCall, ScriptResult, ScriptRunner
from certpilot.issuers.runner import HEAD_BYTES, TAIL_BYTES

CSR = "-----BEGIN CERTIFICATE REQUEST-----\nTUlJQ0NTUi1wbGFjZWhvbGRlcg==\n-----END CERTIFICATE REQUEST-----\n"
CN = "web1.example.test"
# High entropy, no run of it occurs in the filler the tests print around it.
SECRET = "Zq8vWk3mPx7RtY2nLb5JhG4c"
OUTPUT_LIMIT_BYTES = 70 * 1024
MIN_LEAK_CHARS = 8  # a run this long of the secret in the output counts as a leak

GOOD = """
def certificate_request(csr, common_name, args_dict):
    return "good:" + common_name
"""


def script(source: str) -> str:
    return textwrap.dedent(source).lstrip()


def make_call(
    source: str,
    *,
    timeout_s: int = 10,
    args: dict[str, str] | None = None,
    secrets: tuple[str, ...] = (),
    context: dict[str, object] | None = None,
) -> ScriptCall:
    return ScriptCall(
        script_name="probe", source=script(source), timeout_s=timeout_s, csr_pem=CSR, common_name=CN,
        args=dict(args or {}), secrets=secrets, context=dict(context or {}),
    )


@pytest.fixture
def runner() -> Iterator[ScriptRunner]:
    with ScriptRunner() as pool:
        yield pool


@pytest.fixture
def warm_runner(runner: ScriptRunner) -> ScriptRunner:
    """A runner that has served a call, so its zygote's pid is known before the fault."""
    assert_serves_good_call(runner, None)
    return runner


def assert_serves_good_call(runner: ScriptRunner, zygote_pid: int | None) -> None:
    result = runner.call(make_call(GOOD))
    assert (result.error, result.pem) == (None, f"good:{CN}")
    if zygote_pid is not None:
        assert runner.zygote_pid() == zygote_pid, "a script's fault cost the pool its zygote"


def longest_leak(secret: str, text: str) -> str:
    """The longest run of `secret` (at least MIN_LEAK_CHARS long) that occurs in `text`."""
    for size in range(len(secret), MIN_LEAK_CHARS - 1, -1):
        for start in range(len(secret) - size + 1):
            if secret[start : start + size] in text:
                return secret[start : start + size]
    return ""


def assert_no_secret(result: ScriptResult, secret: str = SECRET) -> None:
    for label, text in (("error", result.error or ""), ("output", result.output)):
        assert secret not in text, f"the secret appears in the {label}"
        assert longest_leak(secret, text) == "", f"part of the secret appears in the {label}"


def process_is_running(pid: int) -> bool:
    """True while `pid` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_is_running(pid):
            return True
        time.sleep(0.05)
    return not process_is_running(pid)


# --- success and isolation ---------------------------------------------------


def test_a_returned_string_is_the_result(runner: ScriptRunner) -> None:
    result = runner.call(make_call("""
        def certificate_request(csr, common_name, args_dict):
            return "pem for " + common_name + " with " + args_dict["greeting"]
    """, args={"greeting": "hello"}))

    assert result.error is None
    assert result.pem == f"pem for {CN} with hello"
    assert (result.timed_out, result.pending) == (False, None)
    assert result.duration_s >= 0


def test_the_script_runs_in_another_process(runner: ScriptRunner) -> None:
    result = runner.call(make_call("""
        import os
        def certificate_request(csr, common_name, args_dict):
            return f"{os.getpid()} {os.getppid()}"
    """))

    assert result.error is None
    pid, parent = (int(x) for x in result.pem.split())
    workers = runner.worker_pids()
    assert pid != os.getpid() and parent != os.getpid()
    assert workers and os.getpid() not in workers
    assert pid in workers or parent in workers, "the script ran outside the runner's worker processes"


def test_the_environment_holds_nothing_of_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTPILOT_DATABASE_URL", "secret-db")
    monkeypatch.setenv("CERTPILOT_MASTER_KEY_FILE", "/srv/certpilot/master-key-location")
    caller_env = dict(os.environ)
    with ScriptRunner() as runner:
        result = runner.call(make_call("""
            import json, os
            def certificate_request(csr, common_name, args_dict):
                return json.dumps(dict(os.environ))
        """))

    assert result.error is None
    env = json.loads(result.pem)
    dumped = json.dumps(env)
    assert "CERTPILOT_DATABASE_URL" not in env and "secret-db" not in dumped
    assert "CERTPILOT_MASTER_KEY_FILE" not in env and "master-key-location" not in dumped
    inherited = {k for k, v in caller_env.items() if env.get(k) == v and k not in ("PATH", "LANG")}
    assert inherited == set(), f"the script inherited {sorted(inherited)} from the caller"


def test_each_call_works_in_a_fresh_temporary_directory_removed_afterwards(runner: ScriptRunner) -> None:
    source = """
        import json, os
        def certificate_request(csr, common_name, args_dict):
            found = sorted(os.listdir("."))
            with open("scratch.txt", "w") as f:
                f.write("left behind")
            return json.dumps({"cwd": os.getcwd(), "found": found})
    """
    first = json.loads(runner.call(make_call(source)).pem)
    second = json.loads(runner.call(make_call(source)).pem)

    for seen in (first, second):
        assert seen["found"] == [], "the working directory was not empty"
        assert seen["cwd"] not in ("/", os.getcwd())
        assert not os.path.exists(seen["cwd"]), f"{seen['cwd']} was not removed after the call"
    assert first["cwd"] != second["cwd"]


# --- the context keyword -------------------------------------------------------

CONTEXT = {
    "certificate_name": "web1",
    "profile_name": "corp",
    "subject_alt_names": ["DNS:web1.example.test", "DNS:www.example.test"],
    "key_algorithm": "ec:p256",
    "previous_certificate": "-----BEGIN CERTIFICATE-----\nUFJFVklPVVM=\n-----END CERTIFICATE-----\n",
}


def test_a_script_declaring_context_receives_it_and_can_log(runner: ScriptRunner) -> None:
    result = runner.call(make_call("""
        import json
        def certificate_request(csr, common_name, args_dict, context):
            context.log("hello from the script")
            return json.dumps({
                "csr": csr, "cn": common_name, "args": args_dict,
                "sans": list(context.subject_alt_names), "key": context.key_algorithm,
                "previous": context.previous_certificate,
            })
    """, args={"url": "https://ca.example.test"}, context=CONTEXT))

    assert result.error is None
    seen = json.loads(result.pem)
    assert seen == {
        "csr": CSR, "cn": CN, "args": {"url": "https://ca.example.test"},
        "sans": CONTEXT["subject_alt_names"], "key": "ec:p256", "previous": CONTEXT["previous_certificate"],
    }
    assert "hello from the script" in result.output


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        pytest.param("csr, common_name, args_dict", "no context", id="seed-signature"),
        pytest.param("csr, common_name, args_dict, context=None", "context", id="context-with-default"),
        pytest.param("csr, common_name, args_dict, *, context", "context", id="keyword-only-context"),
    ],
)
def test_context_is_passed_only_when_declared(runner: ScriptRunner, signature: str, expected: str) -> None:
    result = runner.call(make_call(f"""
        def certificate_request({signature}):
            ctx = locals().get("context")
            return "no context" if ctx is None else "context"
    """, context=CONTEXT))

    assert (result.error, result.pem) == (None, expected)


# --- faults --------------------------------------------------------------------


def test_a_hanging_script_is_killed_at_its_timeout(warm_runner: ScriptRunner) -> None:
    pids = warm_runner.zygote_pid()
    started = time.monotonic()
    result = warm_runner.call(make_call("""
        import time
        def certificate_request(csr, common_name, args_dict):
            time.sleep(100)
    """, timeout_s=2))
    elapsed = time.monotonic() - started

    assert result.timed_out
    assert result.pem is None
    assert "timeout" in result.error
    assert 1.5 <= elapsed < 10, f"the call took {elapsed:.1f} s for a 2 s timeout"
    assert_serves_good_call(warm_runner, pids)


GRANDCHILD_RE = re.compile(r"grandchild=(\d+)")


def test_the_timeout_also_kills_what_the_script_started(warm_runner: ScriptRunner) -> None:
    pids = warm_runner.zygote_pid()
    result = warm_runner.call(make_call("""
        import subprocess, time
        def certificate_request(csr, common_name, args_dict):
            child = subprocess.Popen(["sleep", "100"])
            print(f"grandchild={child.pid}", flush=True)
            time.sleep(100)
    """, timeout_s=2))

    assert result.timed_out
    match = GRANDCHILD_RE.search(result.output)
    assert match, f"the script's output lacks the grandchild's pid: {result.output!r}"
    assert wait_until_gone(int(match.group(1))), "the script's grandchild survived the timeout"
    assert_serves_good_call(warm_runner, pids)


def test_a_script_that_returns_leaving_a_child_behind_neither_waits_nor_leaks_it(warm_runner: ScriptRunner) -> None:
    pids = warm_runner.zygote_pid()
    started = time.monotonic()
    result = warm_runner.call(make_call("""
        import subprocess
        def certificate_request(csr, common_name, args_dict):
            child = subprocess.Popen(["sleep", "100"])  # inherits stdout and stderr
            print(f"grandchild={child.pid}", flush=True)
            return "issued"
    """, timeout_s=20))
    elapsed = time.monotonic() - started

    assert (result.error, result.pem) == (None, "issued")
    assert elapsed < 10, f"the call waited {elapsed:.1f} s for a child holding the output pipes"
    match = GRANDCHILD_RE.search(result.output)
    assert match
    assert wait_until_gone(int(match.group(1))), "the script's child outlived the call"
    assert_serves_good_call(warm_runner, pids)


def test_a_raised_exception_message_is_the_error(warm_runner: ScriptRunner) -> None:
    pids = warm_runner.zygote_pid()
    result = warm_runner.call(make_call("""
        def certificate_request(csr, common_name, args_dict):
            raise RuntimeError("CA refused the request: quota exceeded")
    """))

    assert result.pem is None and not result.timed_out
    assert "CA refused the request: quota exceeded" in result.error
    assert "Traceback" not in result.error
    assert_serves_good_call(warm_runner, pids)


def test_sys_exit_with_stderr_gives_the_cas_words_and_the_status(warm_runner: ScriptRunner) -> None:
    pids = warm_runner.zygote_pid()
    result = warm_runner.call(make_call("""
        import sys
        def certificate_request(csr, common_name, args_dict):
            print("contacting the CA", flush=True)
            sys.stderr.write("CA said no: the request violates policy 7\\n")
            sys.exit(3)
    """))

    assert result.pem is None
    assert "CA said no" in result.error
    assert "exit status 3" in result.error
    assert_serves_good_call(warm_runner, pids)


def test_os_exit_gives_a_clear_error(warm_runner: ScriptRunner) -> None:
    pids = warm_runner.zygote_pid()
    result = warm_runner.call(make_call("""
        import os
        def certificate_request(csr, common_name, args_dict):
            os._exit(7)
    """))

    assert result.pem is None and not result.timed_out
    assert "status 7" in result.error
    assert_serves_good_call(warm_runner, pids)


def test_a_crash_by_signal_names_the_signal(warm_runner: ScriptRunner) -> None:
    pids = warm_runner.zygote_pid()
    result = warm_runner.call(make_call("""
        import os, signal
        def certificate_request(csr, common_name, args_dict):
            os.kill(os.getpid(), signal.SIGSEGV)
    """))

    assert result.pem is None and not result.timed_out
    assert "SIGSEGV" in result.error
    assert_serves_good_call(warm_runner, pids)


def test_megabytes_of_output_are_bounded(warm_runner: ScriptRunner) -> None:
    pids = warm_runner.zygote_pid()
    result = warm_runner.call(make_call("""
        import sys
        def certificate_request(csr, common_name, args_dict):
            line = "y" * 1023 + "\\n"
            for stream in (sys.stdout, sys.stderr):
                stream.write("FIRST-LINE\\n")
                for _ in range(5 * 1024):
                    stream.write(line)
                stream.write("LAST-LINE\\n")
            return "done"
    """))

    assert (result.error, result.pem) == (None, "done")
    assert len(result.output.encode()) <= OUTPUT_LIMIT_BYTES
    assert "omitted" in result.output
    omitted = [int(n) for n in re.findall(r"(\d+) bytes omitted", result.output)]
    assert len(omitted) == 2 and all(n > 4 * 1024 * 1024 for n in omitted)
    assert result.output.count("FIRST-LINE") == 2 and result.output.count("LAST-LINE") == 2
    assert_serves_good_call(warm_runner, pids)


# --- sensitive values ------------------------------------------------------------


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param('raise RuntimeError("login failed for password " + pw)', id="raises"),
        pytest.param('sys.stderr.write("wrong password " + pw + "\\n"); sys.exit(2)', id="exits"),
    ],
)
def test_a_sensitive_value_is_masked_everywhere(warm_runner: ScriptRunner, ending: str) -> None:
    pids = warm_runner.zygote_pid()
    result = warm_runner.call(make_call(f"""
        import sys
        def certificate_request(csr, common_name, args_dict, context):
            pw = args_dict["password"]
            print("stdout sees", pw, flush=True)
            print("stderr sees", pw, file=sys.stderr, flush=True)
            context.log("log sees " + pw)
            {ending}
    """, args={"password": SECRET}, secrets=(SECRET,)))

    assert result.pem is None and result.error
    assert_no_secret(result)
    assert "***" in result.error
    for line in ("stdout sees ***", "stderr sees ***", "log sees ***"):
        assert line in result.output, f"{line!r} missing: the script did not print, or it was not masked"
    assert_serves_good_call(warm_runner, pids)


def _straddling(where: str, secret_len: int) -> tuple[int, int]:
    """(filler before, filler after) so that the secret is cut by `where`."""
    body = 3 * 1024 * 1024
    cut = secret_len // 2
    return {
        "head": (HEAD_BYTES - cut, body),
        "head+margin": (HEAD_BYTES + secret_len - cut, body),
        "tail": (body, TAIL_BYTES - cut),
        "tail+margin": (body, TAIL_BYTES + secret_len - cut),
    }[where]


@pytest.mark.parametrize("where", ["head", "head+margin", "tail", "tail+margin"])
def test_a_secret_straddling_a_truncation_boundary_is_masked(warm_runner: ScriptRunner, where: str) -> None:
    before, after = _straddling(where, len(SECRET))
    result = warm_runner.call(make_call(f"""
        import sys
        def certificate_request(csr, common_name, args_dict):
            sys.stdout.write("." * {before} + args_dict["password"] + "." * {after})
            return "done"
    """, args={"password": SECRET}, secrets=(SECRET,)))

    assert (result.error, result.pem) == (None, "done")
    assert "omitted" in result.output, "the output was not truncated: the test does not test the boundary"
    assert_no_secret(result)


# The shift moves where the kept head and tail cut the secret; with the 8 KiB / 24 KiB
# windows of today, 1 and 26 cut it at the head, 14 at the tail, 3 nowhere.
@pytest.mark.parametrize("shift", [1, 3, 14, 26])
def test_a_secret_printed_on_every_line_of_megabytes_is_masked(warm_runner: ScriptRunner, shift: int) -> None:
    # A chatty script (think `curl -v` with basic auth) puts the secret on every line;
    # wherever head and tail are cut, no readable piece of it may survive.
    result = warm_runner.call(make_call(f"""
        import sys
        def certificate_request(csr, common_name, args_dict):
            line = "." * {shift} + "password=" + args_dict["password"] + "\\n"
            for stream in (sys.stdout, sys.stderr):
                stream.write(line * 150000)
            raise RuntimeError("rejected " + args_dict["password"])
    """, args={"password": SECRET}, secrets=(SECRET,)))

    assert result.error is not None
    assert "omitted" in result.output
    assert "password=***" in result.output
    assert_no_secret(result)


def test_a_secret_cut_by_the_log_line_limit_is_masked(warm_runner: ScriptRunner) -> None:
    # context.log keeps a bounded length of each message; the cut must not expose a piece
    result = warm_runner.call(make_call("""
        def certificate_request(csr, common_name, args_dict, context):
            for size in (1000, 4086, 4090, 5000, 10000):
                context.log("." * size + args_dict["password"] + "." * size)
            return "done"
    """, args={"password": SECRET}, secrets=(SECRET,)))

    assert (result.error, result.pem) == (None, "done")
    assert "***" in result.output
    assert_no_secret(result)
