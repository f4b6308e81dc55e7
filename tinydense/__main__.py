"""``python -m tinydense``: the same as the ``tinydense`` command."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
