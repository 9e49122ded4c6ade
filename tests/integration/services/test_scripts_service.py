from certpilot.services import scripts


def test_add_and_list_script(app):
    scripts.add_script(app, "s1", "def certificate_request(csr, common_name, args_dict):\n    return ''\n", actor="t")
    assert [s.name for s in scripts.list_scripts(app)] == ["s1"]
