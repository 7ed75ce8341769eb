"""The Pygments lexer and the TextMate grammar for `.dl` files."""
import json
from pathlib import Path

import pytest
from pygments.token import Error, Keyword, Name, Number

from dsl.pygments_lexer import DlLexer

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(ROOT.glob("specs/*.dl")) + sorted(ROOT.glob("specs/std/*.dl"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_zoo_spec_lexes_without_error_tokens(path):
    text = path.read_text()
    toks = list(DlLexer().get_tokens(text))
    assert not [v for t, v in toks if t in Error], path
    assert "".join(v for _, v in toks) == text if text.endswith("\n") else True


def test_tokens_of_a_small_spec():
    toks = [(t, v) for t, v in DlLexer().get_tokens("model M(h = 3) {\n  input x: f32[B, 64]\n}\n")
            if v.strip()]
    assert (Keyword.Declaration, "model") in toks
    assert (Name.Class, "M") in toks
    assert (Keyword.Type, "f32") in toks
    assert (Number.Integer, "64") in toks
    assert (Name.Variable, "x") in toks


def test_lexer_is_found_by_name_and_filename():
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
    from importlib.metadata import entry_points
    names = [e.name for e in entry_points(group="pygments.lexers")]
    if "dl" not in names:
        pytest.skip("package metadata predates the entry point: reinstall with pip install -e .")
    assert get_lexer_by_name("dl").name == "dl"
    assert get_lexer_for_filename("mlp.dl").name == "dl"


def test_textmate_grammar_is_valid_json_with_patterns():
    g = json.loads((ROOT / "editors/vscode/syntaxes/dl.tmLanguage.json").read_text())
    assert g["scopeName"] == "source.dl" and len(g["patterns"]) >= 8
    import re
    for p in g["patterns"]:
        for k in ("match", "begin", "end"):
            if k in p:
                re.compile(p[k])
