"""``python -m pzone.cli``: the same as the ``pzone`` script."""

from pzone.cli.root import main

if __name__ == "__main__":
    main()
