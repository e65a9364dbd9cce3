"""Command lines of the Windows transport: quoting, refusals, PowerShell 2.0 wrapper text."""

from __future__ import annotations

import base64

import pytest

from infra.testbed.powershell_stub import literals
from sms_plugin.errors import InvalidInput
from sms_plugin.transports import windows_commands
from sms_plugin.transports.interpreters import INTERPRETERS
from sms_plugin.transports.psrp import render

HOSTILE = ["it's", "\u2019x\u2018", "$(calc)", "`n", '"q"', "%PATH%", "a&b", "", "'; rm -r /; '"]


def _decoded(line: str) -> str:
    return base64.b64decode(line.rsplit(" ", 1)[1]).decode("utf-16-le")


def test_powershell_literals_round_trip_through_the_stub_parser():
    text = " ".join(windows_commands.ps_quote(value) for value in HOSTILE)
    assert literals(text) == (HOSTILE, "")


def test_powershell_scripts_run_in_a_pipeline_of_powershell_2_syntax():
    kind, script = render(INTERPRETERS["powershell"].plan("C:\\t\\x.ps1", ["a b", "it's"]))
    assert kind == "psrp"
    assert "  & 'C:\\t\\x.ps1' 'a b' 'it''s' | Out-String -Stream -Width 4096\n" in script
    assert script.endswith("[int]$sms_exit\n")
    assert render(INTERPRETERS["original"].plan("C:\\t\\y.ps1", ["z"])) == ("psrp", windows_commands.run_script("C:\\t\\y.ps1", ["z"]))  # an "original" .ps1
    for newer in ("::new(", "[ordered]", "--%", "-Raw", "$PSItem"):
        assert newer not in script  # PowerShell 3+ only


def test_pipeline_script_sets_environment_and_folder_literally():
    _, script = render(INTERPRETERS["original"].plan("C:\\t\\y.ps1", [], env={"JOB_ID": "r'1"}, cwd="C:\\work dir"))
    assert script.startswith("[Environment]::SetEnvironmentVariable('JOB_ID', 'r''1')\nSet-Location -LiteralPath 'C:\\work dir'\n")


def test_cmd_lines_wrap_quoted_arguments_in_the_quotes_cmd_c_strips():
    assert render(INTERPRETERS["cmd"].plan("C:\\t\\x.bat", ["a b", ""])) == ("winrs", 'cmd.exe /c ""C:\\t\\x.bat" "a b" """')
    assert render(INTERPRETERS["original"].plan("D:\\tools\\job.exe", ["--full"])) == ("winrs", 'cmd.exe /c ""D:\\tools\\job.exe" "--full""')


@pytest.mark.parametrize("bad", ["%x%", "!x!", "^", '"', "&", "|", "<", ">", "(", ")", "\n", "\x07"])
def test_cmd_refuses_what_it_cannot_carry(bad):
    with pytest.raises(InvalidInput, match="cmd.exe cannot pass on safely"):
        render(INTERPRETERS["cmd"].plan("C:\\x.bat", [f"a{bad}b"]))


def test_scripts_are_encoded_for_their_interpreter():
    assert INTERPRETERS["powershell"].encode("é") == b"\xef\xbb\xbf\xc3\xa9"  # UTF-8 with BOM for PowerShell 2.0
    assert INTERPRETERS["cmd"].encode("a\nb\r\n") == b"a\r\nb\r\n"  # CRLF, no BOM (a BOM breaks line 1)
    assert INTERPRETERS["bash"].encode("a\n") == b"a\n"


def test_upload_script_is_powershell_2_syntax_and_names_the_path_literally():
    script = _decoded(windows_commands.upload("C:\\t\\it's.bat"))
    assert "$path = 'C:\\t\\it''s.bat'\n" in script
    for newer in ("-Raw", "Get-FileHash", "[ordered]", "-NoNewline", "::new(", "-Encoding Byte"):
        assert newer not in script  # PowerShell 3+ only


def test_windows_host_block_refuses_basic_over_http_and_keeps_the_password_secret():
    from pydantic import ValidationError

    from blocks.hosts import WindowsHost

    with pytest.raises(ValidationError, match="https only"):
        WindowsHost(address="w", username="u", password="p", auth="basic")
    block = WindowsHost(address="w", username="u", password="s3cret", scheme="https", auth="basic", ca_path="/ca.pem")
    assert "s3cret" not in repr(block) and "s3cret" not in block.describe()
    target = block.target()
    assert (target.password, target.port, target.ca_path, target.commands_per_shell) == ("s3cret", None, "/ca.pem", 15)
    assert target.label == "u@https://w:5986"
