from certpilot.services import scripts


def test_add_and_list_script(app):
    scripts.add_script(app, "s1", "def certificate_request(csr, common_name, args_dict):\n    return ''\n", actor="t")
    assert [s.name for s in scripts.list_scripts(app)] == ["s1"]


import pytest  # noqa: E402

from certpilot.domain.errors import InvalidInput  # noqa: E402

REQUEST_SIGNATURES_ACCEPTED = [
    "csr, common_name, args_dict",
    "csr, common_name, args_dict, context",
    "csr, common_name, args_dict, *, context",
    "csr, common_name, args_dict, context=None",
    "csr, common_name, args_dict, extra=1",
    "*args, **kwargs",
]
REQUEST_SIGNATURES_REFUSED = [
    "csr",
    "csr, common_name",
    "csr, common_name, args_dict, extra",
    "csr, common_name, args_dict, *, token",
]


@pytest.mark.parametrize("signature", REQUEST_SIGNATURES_ACCEPTED)
def test_a_script_whose_request_function_certpilot_can_call_is_accepted(app, signature: str) -> None:
    scripts.add_script(app, "ok", f"def certificate_request({signature}):\n    return ''\n", actor="t")
    assert scripts.get_script(app, "ok").name == "ok"


@pytest.mark.parametrize("signature", REQUEST_SIGNATURES_REFUSED)
def test_a_script_with_a_wrong_signature_is_refused_at_upload(app, signature: str) -> None:
    with pytest.raises(InvalidInput) as info:
        scripts.add_script(app, "bad", f"def certificate_request({signature}):\n    return ''\n", actor="t")
    assert "certificate_request(csr, common_name, args_dict[, context])" in str(info.value)
    assert info.value.field == "source"
    assert scripts.list_scripts(app) == []  # nothing stored


@pytest.mark.parametrize(("source", "accepted"), [
    ("async def certificate_request(csr, common_name, args_dict):\n    return ''\n", False),
    ("def certificate_request(csr, common_name, args_dict):\n    return ''\n"
     "def certificate_poll(cookie):\n    return ''\n", False),
    ("def certificate_request(csr, common_name, args_dict):\n    return ''\n"
     "def certificate_poll(cookie, args_dict, context=None):\n    return ''\n", True),
], ids=["async-request", "poll-missing-args-dict", "poll-with-context"])
def test_certificate_poll_and_async_functions_are_checked_too(app, source: str, accepted: bool) -> None:
    if accepted:
        scripts.add_script(app, "s", source, actor="t")
    else:
        with pytest.raises(InvalidInput):
            scripts.add_script(app, "s", source, actor="t")
