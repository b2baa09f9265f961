"""Table and parseable renderers, and -o field selection."""
from __future__ import annotations

import pytest

from varpd.cli.client import CliError, api_path
from varpd.cli.output import pick_fields, render

ROWS = [{"LINK": "vx1", "VALUE": "a:b\\c"}, {"LINK": "vx22", "VALUE": None}]


def test_table_is_aligned_with_upper_case_headers_and_dashes_for_empty():
    assert render(ROWS, ["LINK", "VALUE"], parseable=False) == "LINK  VALUE\nvx1   a:b\\c\nvx22  --"


def test_parseable_escapes_colon_and_backslash():
    assert render(ROWS, ["LINK", "VALUE"], parseable=True) == "vx1:a\\:b\\\\c\nvx22:--"


def test_parseable_single_field_is_raw():
    assert render(ROWS, ["VALUE"], parseable=True) == "a:b\\c\n--"


def test_pick_fields():
    assert pick_fields(None, ["LINK", "VALUE"]) == ["LINK", "VALUE"]
    assert pick_fields("all", ["LINK", "VALUE"]) == ["LINK", "VALUE"]
    assert pick_fields(" value ,Link", ["LINK", "VALUE"]) == ["VALUE", "LINK"]
    with pytest.raises(CliError, match="unknown field 'x'"):
        pick_fields("link,x", ["LINK", "VALUE"])


def test_api_path_quotes_each_segment():
    assert api_path("v1", "overlays", "a/b#c?d", "entries") == "/v1/overlays/a%2Fb%23c%3Fd/entries"
    assert api_path("v1", "overlays", "..") == "/v1/overlays/%2E%2E"
