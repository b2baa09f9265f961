"""Token files: the http backend and `varpd mapping-server --token-file` read them through one helper."""
from __future__ import annotations

import pytest

from varpd.config.secrets import read_token_file


def test_the_token_is_read_without_surrounding_whitespace(tmp_path):
    path = tmp_path / "token"
    path.write_text("  s3cret\n")
    assert read_token_file(path) == "s3cret"


@pytest.mark.parametrize("content,why", [(None, "cannot read: No such file"), ("\n \n", "empty")])
def test_an_unusable_token_file_is_refused_saying_why(tmp_path, content, why):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=why):
        read_token_file(path)
