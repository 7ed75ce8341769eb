"""A Pygments lexer for `.dl` specs (`pygmentize -l dl`, Sphinx, MkDocs).

Registered through the `pygments.lexers` entry point in pyproject.toml. Anything the
rules below do not know is lexed as plain `Text`, never as an error token, so a new
construct degrades to uncoloured text rather than red boxes.
"""
from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (Comment, Keyword, Name, Number, Operator, Punctuation, String,
                            Text, Whitespace)

__all__ = ["DlLexer"]


class DlLexer(RegexLexer):
    name = "dl"
    aliases = ["dl", "dlc"]
    filenames = ["*.dl"]
    mimetypes = ["text/x-dl"]

    tokens = {
        "root": [
            (r"[ \t\r\n]+", Whitespace),
            (r"#.*?$", Comment.Single),
            (r'"(\\\\|\\"|[^"])*"', String.Double),
            # declarations: the keyword, then the name it declares
            (r"\b(layer|model|fn|train|const)(\s+)([A-Za-z_]\w*)",
             bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (r"\b(input|param|state|output|loss|metric|player)(\s+)([A-Za-z_]\w*)",
             bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            (words(("import", "as", "on", "return", "if", "else", "and", "or", "not"),
                   suffix=r"\b"), Keyword),
            (words(("true", "false"), suffix=r"\b"), Keyword.Constant),
            # types with dims: f32[B, 64]
            (r"\b(f16|f32|f64|i32|i64|bool)\b", Keyword.Type),
            (r"\d+\.\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|\d+[eE][+-]?\d+", Number.Float),
            (r"\d+", Number.Integer),
            (r"[A-Za-z_]\w*(?=\s*\()", Name.Function),
            (r"[A-Z]\w*", Name.Constant),   # symbolic dims and layer names
            (r"[A-Za-z_]\w*", Name),
            (r"\|>|<-|->|==|!=|<=|>=|\*\*|[-+*/%@<>=!^&|~]", Operator),
            (r"[()\[\]{},.:;]", Punctuation),
            (r".", Text),
        ],
    }
