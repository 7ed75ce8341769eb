"""`python -m dsl.build_tables`: recompute the committed LALR tables (`dsl/lalr_tables.json`)
after a change to `grammar.lark` or to the Lark version. Its own module so that
`dsl.tables` (which the parser imports) never imports the parser back."""
from dsl.parser import NewlinePostLex
from dsl.tables import write

if __name__ == "__main__":  # pragma: no cover
    print(f"wrote {write(NewlinePostLex())}")
