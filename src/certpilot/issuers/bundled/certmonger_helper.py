"""certpilot bundled script `certmonger`: run an existing certmonger CA helper unchanged.

The helper is called as certmonger calls it: environment CERTMONGER_OPERATION
(SUBMIT, then POLL while the CA defers), CERTMONGER_CSR and, for POLL,
CERTMONGER_CA_COOKIE. Its exit status says what happened:

    0  issued: the certificate (PEM) on stdout
    1  deferred: a cookie on stdout; polled after `poll_interval_s` (default 300)
    5  deferred: a delay in seconds on the first line of stdout, then the cookie
    2  rejected, 3  the CA could not be reached, 4  the helper is not configured
       enough: failed, with the helper's own words (stdout, then stderr)

Profile parameters (args_dict):
    helper           path of the helper (grant it, and what it reads, with --allow-read)
    helper_args      optional extra arguments, split like a shell would (no shell runs)
    poll_interval_s  optional, seconds to wait after exit status 1
"""

import json
import os
import shlex
import subprocess

from certpilot.issuer import Pending

REASONS = {2: "the CA rejected the request", 3: "the CA could not be reached",
           4: "the helper is not configured enough to submit"}


def _words(proc):
    return (proc.stdout.strip() + "\n" + proc.stderr.strip()).strip()[-2000:] or "(no output)"


def _run(operation, csr, helper_cookie, args_dict):
    helper = args_dict.get("helper") or ""
    if not helper:
        raise ValueError("profile parameter 'helper' (path of the certmonger CA helper) is missing")
    argv = [helper, *shlex.split(args_dict.get("helper_args") or "")]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
           "TMPDIR": os.environ.get("TMPDIR", "/tmp"), "LANG": "C.UTF-8",
           "CERTMONGER_OPERATION": operation, "CERTMONGER_CSR": csr}
    if helper_cookie:
        env["CERTMONGER_CA_COOKIE"] = helper_cookie
    try:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except OSError as exc:
        raise RuntimeError(f"cannot run the certmonger helper {helper}: {exc.strerror or exc}") from None
    code = proc.returncode
    if code == 0:
        return proc.stdout
    # certpilot's poll gets only the cookie: keep the CSR with it, as certmonger would give it again
    if code == 1:
        delay, helper_cookie = int(args_dict.get("poll_interval_s") or 300), proc.stdout.strip()
    elif code == 5:
        first, _, rest = proc.stdout.lstrip().partition("\n")
        try:
            delay = int(first.strip())
        except ValueError:
            raise RuntimeError(f"the certmonger helper exited 5 without a delay on its first line: {_words(proc)}") from None
        helper_cookie = rest.strip()
    elif code in REASONS:
        raise RuntimeError(f"{REASONS[code]} (helper exit status {code}): {_words(proc)}")
    else:
        raise RuntimeError(f"the certmonger helper exited with status {code}: {_words(proc)}")
    print(f"the CA deferred the request (helper exit status {code}); polling again in {delay} s")
    raise Pending(retry_after_s=delay, cookie=json.dumps({"cookie": helper_cookie, "csr": csr}))


def certificate_request(csr, common_name, args_dict):
    return _run("SUBMIT", csr, "", args_dict)


def certificate_poll(cookie, args_dict):
    held = json.loads(cookie)
    return _run("POLL", held["csr"], held["cookie"], args_dict)
